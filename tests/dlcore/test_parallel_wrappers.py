"""dlcore.parallel: DP / DDP / FSDP wrappers and the closed-form communication volumes.

The distributed tests run 2 real processes (gloo on 127.0.0.1, ``torch.multiprocessing`` spawn, see
``_dist_worker.py``); every assertion runs inside the ranks and a failure fails the test with that
rank's traceback.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _dist_worker import run_distributed
from torch import nn

from dlcore import TransformerEncoder, TransformerEncoderLayer
from dlcore.parallel import (
    all_gather_bytes,
    all_reduce_bytes,
    comm_bytes_per_step,
    fsdp_padded_shard_numel,
    fsdp_shard_numel,
    local_nbytes,
    local_numel,
    reduce_scatter_bytes,
    wrap_ddp,
    wrap_dp,
    wrap_fsdp,
)

D_MODEL, N_HEAD, D_FF, N_LAYERS = 12, 2, 7, 3  # d_ff = 7 is odd: FSDP's dim-0 padding is exercised
GLOBAL_BATCH, SEQ = 4, 5
LR, MOMENTUM, STEPS = 0.1, 0.9, 2


def tiny_encoder() -> TransformerEncoder:
    torch.manual_seed(0)
    layer = TransformerEncoderLayer(D_MODEL, N_HEAD, dim_feedforward=D_FF, dropout=0.0)
    return TransformerEncoder(layer, N_LAYERS, norm=nn.LayerNorm(D_MODEL))


def global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    shape = (GLOBAL_BATCH, SEQ, D_MODEL)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g)


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.optim.Optimizer:
    """STEPS steps of SGD with momentum (its state is one buffer per parameter) on a mean MSE loss."""
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    for _ in range(STEPS):
        opt.zero_grad(set_to_none=True)
        F.mse_loss(model(x), y).backward()
        opt.step()
    return opt


def reference() -> nn.Module:
    """One process on the global batch."""
    model = tiny_encoder()
    train(model, *global_batch())
    return model


def rank_half(rank: int, world_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = global_batch()
    per = GLOBAL_BATCH // world_size
    return x[rank * per : (rank + 1) * per], y[rank * per : (rank + 1) * per]


def opt_state_tensors(opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [v for state in opt.state.values() for v in state.values() if isinstance(v, torch.Tensor)]


# ---------------------------------------------------------------- closed forms (no processes)


def test_comm_bytes_closed_forms_exact() -> None:
    P, G = 1000, 600
    assert all_reduce_bytes(G, 4) == 2 * 3 * 600 / 4 == 900.0
    assert all_gather_bytes(P, 4) == 750.0
    assert reduce_scatter_bytes(G, 4) == 450.0
    for w in (1, 2, 4, 8):
        assert comm_bytes_per_step("none", param_bytes=P, grad_bytes=G, world_size=w) == 0.0
        assert comm_bytes_per_step("dp", param_bytes=P, grad_bytes=G, world_size=w) == 0.0
        assert comm_bytes_per_step("ddp", param_bytes=P, grad_bytes=G, world_size=w) == 2 * (w - 1) / w * G
        assert comm_bytes_per_step("fsdp", param_bytes=P, grad_bytes=G, world_size=w) == (
            2 * (w - 1) / w * P + (w - 1) / w * G
        )
        assert comm_bytes_per_step(
            "fsdp", param_bytes=P, grad_bytes=G, world_size=w, reshard_after_forward=False
        ) == ((w - 1) / w * P + (w - 1) / w * G)
    # one rank communicates nothing; W=2 halves
    assert comm_bytes_per_step("ddp", grad_bytes=G, world_size=1) == 0.0
    assert comm_bytes_per_step("ddp", grad_bytes=G, world_size=2) == 600.0
    assert comm_bytes_per_step("fsdp", param_bytes=P, grad_bytes=G, world_size=2) == 1000.0 + 300.0


def test_comm_bytes_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown strategy"):
        comm_bytes_per_step("zero", param_bytes=1, grad_bytes=1, world_size=2)
    with pytest.raises(ValueError, match="world_size"):
        comm_bytes_per_step("ddp", grad_bytes=1, world_size=0)
    with pytest.raises(ValueError, match="activation_bytes_per_microbatch"):
        comm_bytes_per_step("pipeline", world_size=2)


def test_fsdp_shard_numel_follows_torch_chunk() -> None:
    # 7 rows over 2 ranks: 4 + 3 (every rank's buffer padded to 4 rows)
    assert [fsdp_shard_numel((7, 12), 2, r) for r in range(2)] == [48, 36]
    assert fsdp_padded_shard_numel((7, 12), 2) == 48
    # 3 rows over 4 ranks: 1, 1, 1, 0
    assert [fsdp_shard_numel((3,), 4, r) for r in range(4)] == [1, 1, 1, 0]
    # torch.chunk can leave more than one rank empty: 5 rows over 4 ranks -> chunks of 2: 2, 2, 1, 0
    assert [fsdp_shard_numel((5, 3), 4, r) for r in range(4)] == [6, 6, 3, 0]
    for shape, w in [((7, 12), 2), ((3,), 4), ((5, 3), 4), ((36, 12), 3)]:
        t = torch.empty(shape)
        chunks = list(torch.chunk(t, w)) + [t.new_empty(0)] * w
        assert [fsdp_shard_numel(shape, w, r) for r in range(w)] == [c.numel() for c in chunks[:w]]
    with pytest.raises(ValueError, match="rank"):
        fsdp_shard_numel((4,), 2, 2)
    with pytest.raises(ValueError, match="0-d"):
        fsdp_padded_shard_numel((), 2)


def test_local_numel_of_plain_tensors() -> None:
    ts = [torch.zeros(3, 4), torch.zeros(5, dtype=torch.bfloat16)]
    assert local_numel(ts) == 17
    assert local_nbytes(ts) == 12 * 4 + 5 * 2


@pytest.mark.skipif(torch.cuda.device_count() >= 2, reason="this machine can run DataParallel")
def test_wrap_dp_names_the_need_for_two_cuda_devices() -> None:
    with pytest.raises(RuntimeError, match="at least 2 CUDA devices"):
        wrap_dp(nn.Linear(2, 2))


def test_wrap_ddp_needs_a_process_group() -> None:
    with pytest.raises(RuntimeError, match="init_process_group"):
        wrap_ddp(nn.Linear(2, 2))


def test_wrap_fsdp_rejects_a_model_without_blocks() -> None:
    with pytest.raises(ValueError, match="block_types=\\(\\)"):
        wrap_fsdp(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="nn.Module subclasses"):
        wrap_fsdp(tiny_encoder(), block_types=(int,))  # type: ignore[arg-type]


# ---------------------------------------------------------------- DDP on 2 ranks


def _ddp_worker(rank: int, world_size: int) -> None:
    ref = reference()
    model = wrap_ddp(tiny_encoder(), device="cpu")
    # seed bug: the seed passed find_unused_parameters=True, an extra graph walk per step for nothing
    assert model.find_unused_parameters is False
    assert model.device_ids is None  # CPU / gloo: no device_ids
    opt = train(model, *rank_half(rank, world_size))
    ref_params = dict(ref.named_parameters())
    for name, p in model.module.named_parameters():
        torch.testing.assert_close(p, ref_params[name], msg=lambda m, n=name: f"rank {rank}, {n}: {m}")
    # memory that follows from DDP: every rank holds all parameters, gradients and momentum buffers
    full_bytes = sum(p.numel() * 4 for p in ref.parameters())
    assert full_bytes == (N_LAYERS * 859 + 2 * D_MODEL) * 4 == 10404
    assert local_nbytes(list(model.parameters())) == full_bytes
    assert local_nbytes([p.grad for p in model.parameters()]) == full_bytes
    assert local_nbytes(opt_state_tensors(opt)) == full_bytes


@pytest.mark.distributed
def test_ddp_two_ranks_match_one_process_on_the_global_batch() -> None:
    run_distributed(_ddp_worker, 2)


# ---------------------------------------------------------------- FSDP2 on 2 ranks


def _expected_fsdp_numel(rank: int) -> tuple[int, int]:
    """(local elements, padded buffer elements) on ``rank`` of 2, from the shapes: rank 0 holds ceil(d0/2)
    rows of every parameter, rank 1 floor(d0/2); both allocate ceil(d0/2) rows."""
    local = padded = 0
    for p in tiny_encoder().parameters():
        rest = p[0].numel()
        rows = (p.shape[0] + 1) // 2 if rank == 0 else p.shape[0] // 2
        local += rows * rest
        padded += (p.shape[0] + 1) // 2 * rest
    return local, padded


def _fsdp_worker(rank: int, world_size: int) -> None:
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor

    ref = reference()
    model = wrap_fsdp(tiny_encoder(), block_types=(TransformerEncoderLayer,))
    assert model is not None and isinstance(model, FSDPModule)
    assert all(isinstance(layer, FSDPModule) for layer in model.layers)
    assert all(isinstance(p, DTensor) for p in model.parameters())
    opt = train(model, *rank_half(rank, world_size))
    ref_params = dict(ref.named_parameters())
    for name, p in model.named_parameters():
        torch.testing.assert_close(
            p.full_tensor(), ref_params[name], msg=lambda m, n=name: f"rank {rank}, {n}: {m}"
        )

    # memory that follows from FSDP: each rank holds its dim-0 shard of every parameter, gradient and
    # momentum buffer, stored in a buffer padded to ceil(d0 / 2) rows
    local, padded = _expected_fsdp_numel(rank)
    assert (local, padded) == [(1320, 1320), (1281, 1320)][rank]  # 2 * 1320 - 2601 = 39 padding rows' worth
    assert local == sum(fsdp_shard_numel(p.shape, 2, rank) for p in model.parameters())
    assert padded == sum(fsdp_padded_shard_numel(p.shape, 2) for p in model.parameters())
    params = list(model.parameters())
    assert local_nbytes(params) == local * 4
    storages = {p.to_local().untyped_storage().data_ptr(): p.to_local().untyped_storage() for p in params}
    assert sum(s.nbytes() for s in storages.values()) == padded * 4  # = 5280 B vs DDP's 10404 B
    assert local_nbytes([p.grad for p in params]) == local * 4
    assert local_nbytes(opt_state_tensors(opt)) == local * 4
    ddp_bytes = sum(p.numel() * 4 for p in ref.parameters())
    assert 2 * padded * 4 - ddp_bytes == 39 * 4  # about half of DDP: exactly half plus the padding

    # reshard_after_forward: True frees the unsharded parameters after forward, False keeps them
    x, y = rank_half(rank, world_size)
    for reshard in (True, False):
        m = wrap_fsdp(tiny_encoder(), reshard_after_forward=reshard)
        out = m(x)
        assert isinstance(m.layers[0].linear1.weight, DTensor) is reshard
        F.mse_loss(out, y).backward()

    # mixed precision: compute (and all-gather) in bf16, shards and reduced gradients in fp32
    m = wrap_fsdp(tiny_encoder(), mp_dtype=torch.bfloat16)
    seen: list[torch.dtype] = []
    m.layers[0].linear1.register_forward_pre_hook(lambda mod, args: seen.append(mod.weight.dtype))
    F.mse_loss(m(x).float(), y).backward()
    assert seen == [torch.bfloat16]
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in m.parameters())


@pytest.mark.distributed
def test_fsdp_two_ranks_match_one_process_and_halve_memory() -> None:
    run_distributed(_fsdp_worker, 2)


def test_reference_is_deterministic() -> None:
    """The workers compare against a reference each rank computes itself: it must not depend on the rank."""
    a, b = reference(), reference()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
