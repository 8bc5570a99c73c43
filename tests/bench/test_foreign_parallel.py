"""Your model in parallel: the fixture decoder under ddp, fsdp and a traced pipeline on 2 ranks (gloo, CPU).

- One ``dlbench run tests/fixtures/tiny_gpt.py:build --parallel ddp,fsdp,pipeline --nproc 2`` (three
  torchrun jobs, each rank loading the file itself): ``ok`` rows whose memory and communication follow
  from the strategy in closed form, as for the built-ins.
- The strategies as ``dlbench run`` applies them (``bench.run.parallel.apply_parallel`` on the
  factory's workload, blocks detected), on 2 spawned ranks: the losses and gradients equal one process
  on the global batch (ddp and fsdp: each rank its half of the batch, cross-entropy; the pipeline: the
  whole batch in 2 micro-batches, the pipeline's mean-square loss; with and without activation
  checkpointing, which the traced stage keeps). FSDP shards every detected block, then the root. A
  model that does not trace is refused with torch's reason (a ``skipped`` row).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from bench import api
from bench.registry import BuildContext, get_scenario
from bench.run.parallel import ParallelUnsupported, apply_parallel
from bench.workload import Workload, build_workload

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "dlcore"))
from _dist_worker import run_distributed  # noqa: E402

FIXTURE = "tests/fixtures/tiny_gpt.py:build"
B, L, D, V = 4, 8, 16, 32  # the fixture's tiny preset: batch, length, width, vocabulary


@pytest.mark.distributed
def test_ddp_fsdp_and_pipeline_rows_are_ok(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("DLBENCH_SCENARIO_DIR", "")
    s = api.run(
        FIXTURE, preset="tiny", modes="train", parallel="ddp,fsdp,pipeline", nproc=2, device="cpu",
        max_time_s=0.2, target_rel_ci=0.5, progress=False, out=tmp_path / "p.csv",
    )  # fmt: skip
    ddp, fsdp, pipe = s.rows
    assert [r["status"] for r in s.rows] == ["ok"] * 3, [r["reason"] for r in s.rows]
    assert [r["parallel"] for r in s.rows] == ["ddp", "fsdp", "pipeline"]
    p_bytes = ddp["mem_params_bytes"]  # every parameter on a DDP rank (all dim-0 sizes are even)
    assert ddp["comm_bytes_per_step"] == p_bytes  # all-reduce of the gradients: 2 (W-1)/W P
    assert fsdp["mem_params_bytes"] == p_bytes // 2  # a shard each
    assert fsdp["comm_bytes_per_step"] == 3 * p_bytes // 2  # 2 all-gathers + 1 reduce-scatter
    assert fsdp["extra"]["blocks"] == "DecoderBlock" and "fsdp_groups" not in fsdp["extra"]  # per block
    # the pipeline: 4 micro-batches of 1 sequence; stage 0 sends one (1, L, D) fp32 activation each
    assert (pipe["microbatches"], pipe["bubble_fraction"]) == (4, pytest.approx(1 / 5))
    assert pipe["comm_bytes_per_step"] == 4 * L * D * 4
    assert pipe["extra"]["pipeline_loss"] == "mean_square"


class _Branchy(nn.Module):
    """Two blocks and a branch on a tensor's value: torch.export cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
            if x.sum() > 0:  # data-dependent control flow
                x = -x
        return x


def _ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float().flatten(0, 1), y.flatten())


def _close(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=lambda m: f"{what}: {m}")


def _strategies_worker(rank: int, world_size: int, fixture: str) -> None:
    from torch.distributed.fsdp import FSDPModule

    from bench.run.traced_pipeline import traced_pipeline
    from dlcore import apply_activation_checkpointing
    from dlcore.train.checkpointing import is_activation_checkpointed

    spec = get_scenario(fixture)
    cfg = spec.make_config("tiny")
    ctx = BuildContext(device="cpu", mode="train", seed=0)

    def fresh() -> Workload:
        return build_workload(spec, cfg, ctx)  # the same weights on every rank and every call

    ids = torch.randint(0, V, (B, L + 1), generator=torch.Generator().manual_seed(1))
    x, y = ids[:, :-1], ids[:, 1:]
    ref = fresh()  # one process, the global batch
    ref_loss = _ce(ref.model(x), y)
    ref_loss.backward()
    ref_grads = {n: q.grad for n, q in ref.model.named_parameters()}
    half = slice(rank * B // world_size, (rank + 1) * B // world_size)

    for strategy in ("ddp", "fsdp"):
        w = fresh()
        apply_parallel(
            w, strategy, device="cpu", precision="fp32", mode="train", rank=rank, world_size=world_size
        )
        local = _ce(w.model(x[half]), y[half])
        local.backward()
        mean = local.detach().clone()
        dist.all_reduce(mean)
        _close(mean / world_size, ref_loss.detach(), f"{strategy} loss")
        for name, q in w.model.named_parameters():
            grad = q.grad.full_tensor() if strategy == "fsdp" else q.grad
            _close(grad, ref_grads[name.removeprefix("module.")], f"{strategy} rank {rank} {name}")
        if strategy == "fsdp":
            assert isinstance(w.model, FSDPModule)
            assert all(
                isinstance(b, FSDPModule) for b in w.model.blocks
            )  # each detected block, then the root

    ref = fresh()  # the pipeline's loss: the mean square of the output, per micro-batch
    out = ref.model(x)
    ref_mb = [out[:2].float().pow(2).mean().detach(), out[2:].float().pow(2).mean().detach()]
    out.float().pow(2).mean().backward()
    ref_grads = {n: q.grad for n, q in ref.model.named_parameters()}
    for checkpointed in (False, True):  # checkpointing survives the tracing: the stage's blocks again
        w = fresh()
        if checkpointed:
            apply_activation_checkpointing(w.model, module_types=w.blocks)
        w.inputs = (x,)
        _, pipe = apply_parallel(
            w, "pipeline", device="cpu", precision="fp32", mode="train", rank=rank, world_size=world_size,
            microbatches=2,
        )  # fmt: skip
        stage = pipe.module
        assert any(is_activation_checkpointed(m) for m in stage.modules()) is checkpointed
        losses: list[torch.Tensor] = []
        pipe.step(x, target=torch.zeros(B), losses=losses)
        if pipe.is_last:
            _close(torch.stack(losses), torch.stack(ref_mb), "pipeline losses")
        names = [n for n, _ in stage.named_parameters()]
        assert names and all(n in ref_grads for n in names)  # the stage keeps the model's names
        assert (rank == 0) == ("tok.weight" in names) and (rank == 1) == ("head.weight" in names)
        for name, q in stage.named_parameters():
            _close(q.grad, ref_grads[name], f"pipeline (checkpointed: {checkpointed}) rank {rank} {name}")

    bad = Workload(model=_Branchy(), inputs=(torch.randn(4, 4),), blocks=(nn.Linear,))
    try:
        traced_pipeline(
            bad, stage_index=rank, num_stages=world_size, device="cpu", microbatches=2, schedule="gpipe",
            loss_fn=lambda o, t: o.pow(2).mean(),
        )  # fmt: skip
    except ParallelUnsupported as exc:
        assert "_Branchy does not trace with torch.distributed.pipelining" in str(exc), exc
        assert "cause:" in str(exc) or "graph" in str(exc), exc  # torch's own words come along
    else:
        raise AssertionError("a model that does not trace was accepted")


@pytest.mark.distributed
def test_strategies_on_the_fixture_match_one_process_on_the_global_batch() -> None:
    run_distributed(_strategies_worker, 2, str(ROOT / FIXTURE), timeout_s=240.0)


def test_the_ranks_build_what_one_process_builds() -> None:
    """The workers compare against a reference each rank builds itself: it must not depend on the rank."""
    spec = get_scenario(str(ROOT / FIXTURE))
    ctx = BuildContext(device="cpu", mode="train", seed=0)
    a, b = (build_workload(spec, spec.make_config("tiny"), ctx) for _ in range(2))
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb)
