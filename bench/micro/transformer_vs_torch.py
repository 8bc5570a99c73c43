"""dlcore's attention and encoder layer against torch's, side by side in one process.

    python -m bench.micro.transformer_vs_torch            # B=8, L=512, E=512, 8 heads, fp32, CPU
    python -m bench.micro.transformer_vs_torch --quick    # fewer rounds, for a smoke check

Three cases, each timing dlcore and torch with the same weights and inputs:

* ``mha_fwd_bwd``: ``MultiHeadAttention`` vs ``nn.MultiheadAttention`` self-attention, forward and
  backward (train mode, dropout 0, ``need_weights=False`` for both). Goal: ratio <= 1.0.
* ``enc_train``: ``TransformerEncoderLayer`` vs ``nn.TransformerEncoderLayer`` forward and backward
  (train mode). Goal: ratio <= 1.05.
* ``enc_infer``: the same layers in eval mode under ``torch.no_grad()``. torch takes its native
  fast path (``torch._transformer_encoder_layer_fwd``) here; dlcore runs its ordinary modules
  (SDPA, packed in-projection). Goal: ratio <= 1.1.

Rounds are interleaved A/B/B/A (the order alternates so that drift in machine load hits both
sides alike); each round times ``--inner`` back-to-back calls. The table shows the medians over
rounds and two ratios dlcore/torch: of the medians, and the median of the per-round ratios (the
robust one on a shared machine). Ratios below 1 mean dlcore is faster.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

import dlcore

Step = Callable[[], None]


@dataclass
class CaseResult:
    name: str
    goal: float
    dlcore_s: list[float]
    torch_s: list[float]

    @property
    def ratio_of_medians(self) -> float:
        return statistics.median(self.dlcore_s) / statistics.median(self.torch_s)

    @property
    def median_ratio(self) -> float:
        return statistics.median(d / t for d, t in zip(self.dlcore_s, self.torch_s, strict=True))


def _time(step: Step, inner: int) -> float:
    t0 = time.perf_counter()
    for _ in range(inner):
        step()
    return (time.perf_counter() - t0) / inner


def compare(
    name: str, goal: float, ours: Step, theirs: Step, rounds: int, inner: int, warmup: int
) -> CaseResult:
    for _ in range(warmup):
        ours()
        theirs()
    res = CaseResult(name, goal, [], [])
    for r in range(rounds):
        if r % 2 == 0:
            res.dlcore_s.append(_time(ours, inner))
            res.torch_s.append(_time(theirs, inner))
        else:
            res.torch_s.append(_time(theirs, inner))
            res.dlcore_s.append(_time(ours, inner))
    return res


def _fwd_bwd(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    grad: torch.Tensor,
    params: list[nn.Parameter],
) -> Step:
    def step() -> None:
        x.grad = None
        for p in params:
            p.grad = None
        fn(x).backward(grad)

    return step


def _infer(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> Step:
    def step() -> None:
        with torch.no_grad():
            fn(x)

    return step


def run(args: argparse.Namespace) -> list[CaseResult]:
    torch.manual_seed(0)
    b, seq, e, h, ffn = args.batch, args.seq_len, args.embed_dim, args.heads, args.ffn
    rounds, inner, warmup = args.rounds, args.inner, args.warmup
    x = torch.randn(b, seq, e, requires_grad=True)  # (B, L, E)
    grad = torch.randn(b, seq, e)  # (B, L, E)
    results: list[CaseResult] = []

    if "mha" in args.cases:
        ref = nn.MultiheadAttention(e, h, dropout=0.0, batch_first=True)
        ours = dlcore.MultiHeadAttention(e, h, dropout=0.0, batch_first=True)
        ours.load_state_dict(ref.state_dict())
        results.append(
            compare(
                "mha_fwd_bwd",
                1.0,
                _fwd_bwd(lambda t: ours(t, t, t, need_weights=False)[0], x, grad, list(ours.parameters())),
                _fwd_bwd(lambda t: ref(t, t, t, need_weights=False)[0], x, grad, list(ref.parameters())),
                rounds,
                inner,
                warmup,
            )
        )

    if "enc_train" in args.cases or "enc_infer" in args.cases:
        kw: dict[str, Any] = dict(
            dim_feedforward=ffn,
            dropout=args.dropout,
            activation=args.activation,
            batch_first=True,
            norm_first=args.norm_first,
        )
        ref_l = nn.TransformerEncoderLayer(e, h, **kw)
        ours_l = dlcore.TransformerEncoderLayer(e, h, **kw)
        ours_l.load_state_dict(ref_l.state_dict())
        if "enc_train" in args.cases:
            ref_l.train()
            ours_l.train()
            results.append(
                compare(
                    "enc_train",
                    1.05,
                    _fwd_bwd(ours_l, x, grad, list(ours_l.parameters())),
                    _fwd_bwd(ref_l, x, grad, list(ref_l.parameters())),
                    rounds,
                    inner,
                    warmup,
                )
            )
        if "enc_infer" in args.cases:
            ref_l.eval()
            ours_l.eval()
            xi = x.detach()
            results.append(
                compare(
                    "enc_infer",
                    1.1,
                    _infer(ours_l, xi),
                    _infer(ref_l, xi),
                    rounds,
                    inner,
                    warmup,
                )
            )
    return results


def format_table(results: list[CaseResult]) -> str:
    head = (
        f"{'case':<12} {'dlcore ms':>10} {'torch ms':>10} {'ratio(med)':>11} {'med(ratio)':>11} {'goal':>6}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        ok = "ok" if r.median_ratio <= r.goal else "OVER"
        ours_ms, torch_ms = 1e3 * statistics.median(r.dlcore_s), 1e3 * statistics.median(r.torch_s)
        lines.append(
            f"{r.name:<12} {ours_ms:>10.2f} {torch_ms:>10.2f} "
            f"{r.ratio_of_medians:>11.3f} {r.median_ratio:>11.3f} {'<=' + format(r.goal, '.2f'):>6} {ok}"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="3 rounds of 1 call after 1 warm-up (smoke check)")
    p.add_argument("--rounds", type=int, default=11, help="interleaved A/B rounds (default 11)")
    p.add_argument("--inner", type=int, default=2, help="calls per timed round (default 2)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls of each side first (default 2)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: CPUs available)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--embed-dim", type=int, default=512)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--ffn", type=int, default=2048, help="encoder layer dim_feedforward")
    p.add_argument("--dropout", type=float, default=0.0, help="encoder layer dropout (default 0.0)")
    p.add_argument("--activation", choices=("relu", "gelu"), default="relu")
    p.add_argument("--norm-first", action="store_true", help="pre-norm encoder layers")
    p.add_argument(
        "--cases",
        nargs="+",
        choices=("mha", "enc_train", "enc_infer"),
        default=["mha", "enc_train", "enc_infer"],
    )
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.inner, args.warmup = 3, 1, 1
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, args.threads or available))
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32 CPU; B={args.batch} "
        f"L={args.seq_len} E={args.embed_dim} heads={args.heads} ffn={args.ffn} dropout={args.dropout} "
        f"activation={args.activation} norm_first={args.norm_first}; "
        f"{args.rounds} rounds x {args.inner} calls"
    )
    print(format_table(run(args)))


if __name__ == "__main__":
    main()
