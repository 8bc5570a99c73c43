"""The whole training recipe on CPU in seconds: a tiny ResNet and a tiny Transformer encoder.

Run ``python -m dlcore.examples.recipe``. Each model is trained with ``dlcore.fit`` on a synthetic
task and the script exits non-zero unless the loss falls. The recipe (what the seed's
``advanced_training_loop`` meant to show, without its bugs):

- AMP in bf16 through ``torch.amp`` (Micikevicius et al. 2018), no GradScaler (bf16 needs none);
- activation checkpointing of every residual block / encoder layer (Chen et al. 2016), applied from
  outside the model, non-re-entrant;
- ``AdamWWithWarmup`` (Loshchilov & Hutter 2019; warm-up + cosine) as the ONLY schedule;
- MixUp (Zhang et al. 2018) or CutMix (Yun et al. 2019) for the ResNet, each on half the batches;
- gradient clipping, early stopping on the validation loss with best-weight restore, and an atomic
  checkpoint in a temporary directory, reloaded at the end to check it.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

import dlcore
import dlcore.augment.mix

Batch = tuple[Any, torch.Tensor]


class _RandomMixOrCut:
    """Half the batches MixUp, half CutMix (each batch picks one), as in common image recipes."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator
        self.mixup = dlcore.MixUp(alpha=0.2, generator=generator)
        self.cutmix = dlcore.CutMix(alpha=1.0, generator=generator)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> dlcore.augment.mix.MixResult:
        use_cutmix = float(torch.rand((), generator=self.generator)) < 0.5
        return (self.cutmix if use_cutmix else self.mixup)(x, y)


def image_batches(n_batches: int, batch: int, num_classes: int, seed: int, size: int = 32) -> list[Batch]:
    """Images = a fixed random template of their class + noise (templates shared across seeds).

    32x32, not smaller: at 16x16 the last stage's strided 3x3 conv sees a 1x1 map, and on torch 2.13
    CPU the bf16 weight gradient of such a conv is sometimes garbage or inf/NaN (fit then counts
    skipped steps)."""
    templates = torch.randn(num_classes, 3, size, size, generator=torch.Generator().manual_seed(1234))
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        y = torch.randint(0, num_classes, (batch,), generator=g)
        x = templates[y] + 0.8 * torch.randn(batch, 3, size, size, generator=g)  # (B, 3, H, W)
        out.append((x, y))
    return out


def sequence_batches(
    n_batches: int, batch: int, num_classes: int, vocab: int, seq_len: int, seed: int
) -> list[Batch]:
    """Token sequences whose class is the token that appears most often (about half the tokens);
    sequences have random lengths, the rest is padding (masked with ``padding_mask``)."""
    g = torch.Generator().manual_seed(seed)
    out: list[Batch] = []
    for _ in range(n_batches):
        y = torch.randint(0, num_classes, (batch,), generator=g)
        noise = torch.randint(0, vocab, (batch, seq_len), generator=g)
        signal = torch.rand(batch, seq_len, generator=g) < 0.5
        tokens = torch.where(signal, y[:, None], noise)  # (B, L)
        lengths = torch.randint(seq_len // 2, seq_len + 1, (batch,), generator=g)
        padding_mask = torch.arange(seq_len)[None, :] >= lengths[:, None]  # (B, L), True = padding
        out.append(({"tokens": tokens, "padding_mask": padding_mask}, y))
    return out


class EncoderClassifier(nn.Module):
    """Embedding + sinusoidal positions + dlcore TransformerEncoder + masked mean pool + linear head."""

    def __init__(
        self, vocab: int, num_classes: int, d_model: int = 32, nhead: int = 4, num_layers: int = 2
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.pos = dlcore.SinusoidalPositionalEncoding(d_model, max_len=256, dropout=0.0)
        layer = dlcore.TransformerEncoderLayer(
            d_model, nhead, dim_feedforward=2 * d_model, dropout=0.0, batch_first=True
        )
        self.encoder = dlcore.TransformerEncoder(layer, num_layers)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, tokens: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        x = self.pos(self.embed(tokens))  # (B, L) -> (B, L, D)
        x = self.encoder(x, src_key_padding_mask=padding_mask)  # (B, L, D)
        keep = (~padding_mask).unsqueeze(-1).to(x.dtype)  # (B, L, 1)
        pooled = (x * keep).sum(1) / keep.sum(1).clamp_min(1.0)  # (B, D)
        return self.head(pooled)  # (B, num_classes)


def _run(
    name: str,
    model: nn.Module,
    train: list[Batch],
    val: list[Batch],
    *,
    epochs: int,
    checkpoint_types: tuple[type[nn.Module], ...],
    mix: Callable[..., Any] | None,
    lr: float,
    workdir: Path,
    log: Callable[[str], None],
    make_model: Callable[[], nn.Module],
) -> dict[str, Any]:
    total_steps = epochs * len(train)
    optimizer = dlcore.AdamWWithWarmup(
        model.parameters(),
        lr=lr,
        weight_decay=0.01,
        warmup_steps=max(1, total_steps // 10),
        total_steps=total_steps,
    )
    path = workdir / f"{name}.pt"
    log(
        f"== {name}: {sum(p.numel() for p in model.parameters())} parameters, {epochs} epochs x "
        f"{len(train)} steps, bf16 autocast, checkpointing {[t.__name__ for t in checkpoint_types]}"
    )
    history = dlcore.fit(
        model,
        train,
        optimizer=optimizer,
        loss_fn=nn.functional.cross_entropy,
        epochs=epochs,
        device="cpu",
        precision="bf16",
        scheduler=None,
        val_loader=val,
        early_stopping=dlcore.EarlyStopping(patience=3, min_delta=1e-4),
        mix=mix,
        checkpointing=checkpoint_types,
        max_grad_norm=1.0,
        checkpoint_path=path,
        log=log,
    )
    # the checkpoint on disk holds the final (or restored best) weights: reload and compare
    fresh = make_model()
    payload = dlcore.load_checkpoint(path, fresh)
    same = all(
        torch.equal(a, b)
        for a, b in zip(fresh.state_dict().values(), model.state_dict().values(), strict=True)
    )
    first, last = history.train_loss[0], min(history.train_loss)
    first_val, best_val = history.val_loss[0], min(history.val_loss)
    ok = math.isfinite(last) and last < 0.8 * first and best_val < 0.8 * first_val and same
    log(
        f"   {name}: train loss {first:.3f} -> {last:.3f}, val loss {first_val:.3f} -> {best_val:.3f}, "
        f"checkpoint epoch {payload['epoch'] + 1} reloaded {'equal' if same else 'DIFFERENT'}: "
        f"{'ok' if ok else 'FAILED'}"
    )
    return {"name": name, "history": history, "ok": ok}


def main(
    argv: Sequence[str] | None = None,
    *,
    epochs: int | None = None,
    steps_per_epoch: int | None = None,
    log: Callable[[str], None] = print,
) -> int:
    """Train both models; return 0 when the loss fell for both (the process exit code)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--steps-per-epoch", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    epochs = epochs or args.epochs
    steps = steps_per_epoch or args.steps_per_epoch
    torch.manual_seed(args.seed)
    results = []
    with tempfile.TemporaryDirectory(prefix="dlcore-recipe-") as tmp:
        workdir = Path(tmp)

        num_classes = 4

        def make_resnet() -> nn.Module:
            return dlcore.create_resnet("tiny", num_classes=num_classes)

        torch.manual_seed(args.seed)
        results.append(
            _run(
                "resnet-tiny",
                make_resnet(),
                image_batches(steps, 32, num_classes, seed=args.seed + 1),
                image_batches(2, 32, num_classes, seed=999),
                epochs=epochs,
                checkpoint_types=(dlcore.PreActBottleneck,),
                mix=_RandomMixOrCut(torch.Generator().manual_seed(args.seed)),
                lr=3e-3,
                workdir=workdir,
                log=log,
                make_model=make_resnet,
            )
        )

        vocab, seq_len = 12, 24

        def make_encoder() -> nn.Module:
            return EncoderClassifier(vocab, num_classes)

        torch.manual_seed(args.seed)
        results.append(
            _run(
                "encoder-tiny",
                make_encoder(),
                sequence_batches(steps, 32, num_classes, vocab, seq_len, seed=args.seed + 2),
                sequence_batches(2, 32, num_classes, vocab, seq_len, seed=998),
                epochs=epochs,
                checkpoint_types=(dlcore.TransformerEncoderLayer,),
                mix=None,
                lr=3e-3,
                workdir=workdir,
                log=log,
                make_model=make_encoder,
            )
        )
    failed = [r["name"] for r in results if not r["ok"]]
    log("recipe: " + ("loss fell for every model" if not failed else f"FAILED for {', '.join(failed)}"))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
