"""dlcore.parallel.pipeline: splitting, GPipe / 1F1B over torch.distributed.pipelining, bubble, comm bytes.

The distributed tests run one pipeline stage per process (2 processes, gloo on 127.0.0.1,
``torch.multiprocessing`` spawn, see ``_dist_worker.py``) and compare every rank's stage with the
unsplit model run on the same micro-batches in the same process.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from _dist_worker import run_distributed
from torch import nn

from dlcore import TransformerEncoder, TransformerEncoderLayer, create_resnet
from dlcore.parallel import (
    EncoderStage,
    ResNetStage,
    balanced_partition,
    bubble_fraction,
    build_pipeline,
    comm_bytes_per_step,
    local_nbytes,
    pipeline_comm_bytes_per_step,
    split_encoder,
    split_resnet,
)

D_MODEL, N_HEAD, D_FF, N_LAYERS = 12, 2, 7, 3
LAYER_PARAMS = 4 * D_MODEL**2 + 2 * D_MODEL * D_FF + D_FF + 9 * D_MODEL  # attention, FFN, two LayerNorms
BATCH, SEQ, MICROBATCHES = 8, 5, 4


def tiny_encoder() -> TransformerEncoder:
    torch.manual_seed(0)
    layer = TransformerEncoderLayer(D_MODEL, N_HEAD, dim_feedforward=D_FF, dropout=0.0)
    return TransformerEncoder(layer, N_LAYERS, norm=nn.LayerNorm(D_MODEL))


def tiny_resnet() -> nn.Module:
    torch.manual_seed(0)
    return create_resnet("tiny")  # stages of one block, widths 32/64/128/256, 10 classes


# ---------------------------------------------------------------- closed forms and splitting


def test_bubble_fraction_closed_form() -> None:
    assert bubble_fraction(1, 8) == 0.0
    assert bubble_fraction(2, 4) == 1 / 5
    assert bubble_fraction(4, 4) == 3 / 7
    assert bubble_fraction(4, 1) == 3 / 4  # the seed's no-micro-batch "pipeline": 1 of p devices busy
    assert bubble_fraction(4, 28) == 3 / 31
    with pytest.raises(ValueError, match="microbatches"):
        bubble_fraction(2, 0)


def test_balanced_partition_minimises_the_largest_part() -> None:
    assert balanced_partition([1] * 5, 2) == [range(0, 3), range(3, 5)]
    assert balanced_partition([1] * 4, 3) == [range(0, 2), range(2, 3), range(3, 4)]
    assert balanced_partition([1] * 3, 3) == [range(0, 1), range(1, 2), range(2, 3)]
    assert balanced_partition([3, 4, 6, 3], 2) == [range(0, 2), range(2, 4)]  # ResNet-50's blocks: 7 | 9
    assert balanced_partition([1, 1, 1, 10], 2) == [range(0, 3), range(3, 4)]
    assert balanced_partition([0, 0, 5], 3) == [range(0, 1), range(1, 2), range(2, 3)]
    with pytest.raises(ValueError, match="non-empty"):
        balanced_partition([1, 1], 3)


def test_split_encoder_is_balanced_shares_layers_and_keeps_names() -> None:
    model = tiny_encoder()
    stages = split_encoder(model, 2)
    assert all(isinstance(s, EncoderStage) for s in stages)
    assert [list(s.layers) for s in stages] == [["0", "1"], ["2"]]
    assert stages[0].norm is None and stages[1].norm is model.norm
    assert stages[0].layers["1"] is model.layers[1]  # shared, not copied
    keys = [set(s.state_dict()) for s in stages]
    assert keys[0].isdisjoint(keys[1]) and keys[0] | keys[1] == set(model.state_dict())
    assert [list(s.layers) for s in split_encoder(model, 3)] == [["0"], ["1"], ["2"]]
    x = torch.randn(2, SEQ, D_MODEL)
    for causal in (False, True):
        y = x
        for s in split_encoder(model, 2, is_causal=causal):
            y = s(y)
        torch.testing.assert_close(y, model(x, is_causal=causal), rtol=0, atol=0)
    with pytest.raises(ValueError, match="cannot cut 3 layers into 4"):
        split_encoder(model, 4)


def test_split_resnet_at_residual_stages() -> None:
    model = tiny_resnet().eval()
    stages = split_resnet(model, 2)
    assert all(isinstance(s, ResNetStage) for s in stages)
    assert stages[0].stem is model.stem and stages[1].stem is None
    assert [list(s.stages) for s in stages] == [["0", "1"], ["2", "3"]]
    assert not stages[0].has_head and stages[1].has_head and stages[1].fc is model.fc
    # exact parameter counts of each stage's modules: stem 1192 + blocks 1200 + 6016; blocks 23808 + 94720,
    # final norm 512, classifier 2570
    assert [sum(p.numel() for p in s.parameters()) for s in stages] == [8408, 121610]
    keys = [set(s.state_dict()) for s in stages]
    assert keys[0].isdisjoint(keys[1]) and keys[0] | keys[1] == set(model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(stages[1](stages[0](x)), model(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="4 residual stages into 5"):
        split_resnet(model, 5)


def test_split_resnet_by_blocks_balances_block_counts() -> None:
    torch.manual_seed(0)
    model = create_resnet("tiny", layers=(2, 2, 2, 2)).eval()
    stages = split_resnet(model, 3, granularity="block")
    blocks = [[f"{i}.{j}" for i, st in s.stages.items() for j in st] for s in stages]
    assert blocks == [["0.0", "0.1", "1.0"], ["1.1", "2.0", "2.1"], ["3.0", "3.1"]]
    assert set().union(*(s.state_dict() for s in stages)) == set(model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    y = x
    for s in stages:
        y = s(y)
    torch.testing.assert_close(y, model(x), rtol=0, atol=0)
    # whole residual stages only: (2, 2, 2, 2) blocks into 3 -> 4 | 2 | 2
    assert [list(s.stages) for s in split_resnet(model, 3)] == [["0", "1"], ["2"], ["3"]]


def test_pipeline_comm_bytes_exact() -> None:
    a = BATCH // MICROBATCHES * SEQ * D_MODEL * 4  # one micro-batch's activation, fp32: 480 B
    sent = [pipeline_comm_bytes_per_step(a, microbatches=4, num_stages=3, stage_index=s) for s in range(3)]
    assert sent == [4 * 480, 2 * 4 * 480, 4 * 480]  # first: activations; middle: both ways; last: grads
    assert pipeline_comm_bytes_per_step([100, 300], microbatches=2, num_stages=3, stage_index=1) == 800
    assert pipeline_comm_bytes_per_step(a, microbatches=8, num_stages=1, stage_index=0) == 0
    assert (
        comm_bytes_per_step(
            "pipeline", world_size=3, activation_bytes_per_microbatch=a, microbatches=4, stage_index=1
        )
        == 3840
    )
    with pytest.raises(ValueError, match="boundaries"):
        pipeline_comm_bytes_per_step([1, 2, 3], microbatches=2, num_stages=3, stage_index=0)


def test_build_pipeline_validates_before_touching_the_network() -> None:
    stage = split_encoder(tiny_encoder(), 2)[0]
    kw = {"stage_index": 0, "num_stages": 2, "device": "cpu"}
    with pytest.raises(ValueError, match="schedule"):
        build_pipeline(stage, microbatches=4, schedule="interleaved", **kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="1F1B needs microbatches >= num_stages"):
        build_pipeline(stage, microbatches=1, schedule="1f1b", **kw)
    with pytest.raises(ValueError, match="microbatches must be >= 1"):
        build_pipeline(stage, microbatches=0, **kw)
    with pytest.raises(RuntimeError, match="init_process_group"):
        build_pipeline(stage, microbatches=4, **kw)


# ---------------------------------------------------------------- 2 stages on 2 ranks

# the order of forwards (F) and backwards (B) each stage runs in one step, p = 2, m = 4
EXPECTED_ORDER = {
    "gpipe": ["FFFFBBBB", "FFFFBBBB"],  # fill, then drain: m micro-batches of activations in flight
    "1f1b": ["FFBFBFBB", "FBFBFBFB"],  # warm-up of p - rank forwards, then one forward, one backward
}


def _record_events(stage: nn.Module, events: list[str], batch_sizes: list[int]) -> None:
    def pre_forward(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        events.append("F")
        batch_sizes.append(args[0].shape[0])

    stage.register_forward_pre_hook(pre_forward)
    next(stage.parameters()).register_post_accumulate_grad_hook(lambda p: events.append("B"))


def _check_pipeline(
    rank: int,
    schedule: str,
    ref: nn.Module,
    stage: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn,
    stage_bytes: list[int],
) -> None:
    """One step of the pipeline vs the unsplit ``ref`` on the same micro-batches; then a second step's
    forward/backward order."""
    # only this stage's parameters live on this rank: the exact bytes of its modules
    assert local_nbytes(list(stage.parameters())) == stage_bytes[rank]
    events: list[str] = []
    batch_sizes: list[int] = []
    _record_events(stage, events, batch_sizes)
    pipe = build_pipeline(
        stage,
        stage_index=rank,
        num_stages=2,
        device="cpu",
        microbatches=MICROBATCHES,
        schedule=schedule,
        loss_fn=loss_fn,
    )
    losses: list[torch.Tensor] = []
    out = pipe.step(x, target=y, losses=losses)

    ref_outs = [ref(xc) for xc in x.chunk(MICROBATCHES)]  # the unsplit model, micro-batch by micro-batch
    ref_losses = [loss_fn(o, yc) for o, yc in zip(ref_outs, y.chunk(MICROBATCHES), strict=True)]
    torch.stack(ref_losses).mean().backward()
    if pipe.is_last:
        torch.testing.assert_close(torch.stack(losses).detach(), torch.stack(ref_losses).detach())
        torch.testing.assert_close(out, torch.cat(ref_outs).detach())
    else:
        assert out is None and losses == []
    ref_params, ref_buffers = dict(ref.named_parameters()), dict(ref.named_buffers())
    for name, p in stage.named_parameters():
        torch.testing.assert_close(p.grad, ref_params[name].grad, msg=lambda m, n=name: f"{n}: {m}")
    # BatchNorm running statistics took exactly one update per micro-batch (the shape-inference forward
    # that PipelineStage runs on the first step is undone)
    for name, b in stage.named_buffers():
        torch.testing.assert_close(b, ref_buffers[name], msg=lambda m, n=name: f"{n}: {m}")

    # seed bug: no micro-batches. Every forward sees B / m samples, and a step runs m forwards and m
    # backwards in the schedule's order
    assert set(batch_sizes) == {BATCH // MICROBATCHES}
    events.clear()
    stage.zero_grad(set_to_none=True)
    pipe.step(x, target=y, losses=[])
    assert "".join(events) == EXPECTED_ORDER[schedule][rank]


def _pipeline_worker(rank: int, world_size: int, schedule: str) -> None:
    g = torch.Generator().manual_seed(1)
    # Transformer encoder: 3 layers -> stages of 2 and 1 (+ final norm) layers
    ref = tiny_encoder()
    stage = split_encoder(copy.deepcopy(ref), world_size)[rank]  # the rest of the copy is dropped
    x, y = torch.randn(BATCH, SEQ, D_MODEL, generator=g), torch.randn(BATCH, SEQ, D_MODEL, generator=g)
    encoder_bytes = [2 * LAYER_PARAMS * 4, (LAYER_PARAMS + 2 * D_MODEL) * 4]
    assert encoder_bytes == [6872, 3532]
    _check_pipeline(rank, schedule, ref, stage, x, y, F.mse_loss, encoder_bytes)

    # ResNet (BatchNorm in train mode: statistics per micro-batch, as in the reference)
    ref = tiny_resnet()
    stage = split_resnet(copy.deepcopy(ref), world_size)[rank]
    x, y = torch.randn(BATCH, 3, 32, 32, generator=g), torch.randint(0, 10, (BATCH,), generator=g)
    _check_pipeline(rank, schedule, ref, stage, x, y, F.cross_entropy, [8408 * 4, 121610 * 4])


@pytest.mark.distributed
@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
def test_pipeline_matches_the_unsplit_model_on_the_same_microbatches(schedule: str) -> None:
    run_distributed(_pipeline_worker, 2, schedule)
