"""Your model in dlbench: a factory that returns a Workload (see README.md, "Your model")."""

import torch
import torch.nn.functional as F
from torch import nn

from bench.api import Workload, scenario


@scenario(presets={"tiny": {"width": 64, "depth": 2, "seq_len": 32, "batch_size": 4}})
def build(width: int = 256, depth: int = 4, heads: int = 4, seq_len: int = 128, batch_size: int = 8):
    """A Transformer encoder tagging each token with one of 10 classes; items = tokens."""
    layer = nn.TransformerEncoderLayer(width, heads, 4 * width, 0.0, batch_first=True, norm_first=True)
    encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
    model = nn.Sequential(encoder, nn.Linear(width, 10))
    x = torch.randn(batch_size, seq_len, width)  # made on the run's device, once, reused every step
    labels = torch.randint(0, 10, (batch_size, seq_len))

    def loss_fn(logits: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten())

    items = batch_size * seq_len  # what throughput counts
    return Workload(model=model, inputs=(x,), loss_fn=loss_fn, items_per_step=items, unit="tokens")
