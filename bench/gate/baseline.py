"""Deterministic figures of a small scenario set, compared exactly against ``results/baseline/baseline.json``.

Why exact: FLOPs per step (``FlopCounterMode``) and tracked memory bytes (``MemTracker``: sums of
storage sizes) do not depend on how busy the machine is, so any difference is a real change --
a layer that computes more, an activation kept alive, an optimizer state doubled -- and needs no
statistics and no threshold. They complement the timing gate, which can only see slowdowns beyond
its noise.

Figures per case (``CASES``: tiny presets, train, fp32, CPU; one with activation checkpointing so
the recomputation is pinned too), all integers:

* ``flops.<phase>`` and ``flops.total``: ``bench.harness.flops.count_flops_by_phase``;
* ``mem.<phase>.peak_bytes``, ``mem.<phase>.activations_peak_bytes``,
  ``mem.<phase>.temporaries_peak_bytes``: per-phase tracked peaks (``measure_memory``, warm);
* ``mem.params_bytes``, ``mem.grads_bytes``, ``mem.optimizer_bytes``, ``mem.activations_bytes``,
  ``mem.buffers_bytes``, ``mem.inputs_bytes``.

Each case is built exactly as ``dlbench run`` builds it (``bench.workload.build_step``), then:
memory pass (one untracked warm step, one tracked), FLOP pass (one more step). The figures depend
on the torch version (its kernels decide what is saved for backward); the file records the
version it was made with, and a check under another version says so next to any difference.

``check_baseline()`` -> ``BaselineReport`` (``ok``, every differing figure named);
``update_baseline()`` rewrites the file. Torch is imported only when figures are computed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import UsageError

KIND = "dlbench-baseline"
VERSION = 1
DEFAULT_PATH = Path(__file__).resolve().parents[2] / "results" / "baseline" / "baseline.json"


@dataclass(frozen=True)
class Case:
    """One configuration whose figures are pinned; ``name`` is its key in the baseline file."""

    name: str
    scenario: str
    preset: str = "tiny"
    mode: str = "train"
    precision: str = "fp32"
    checkpointing: str = "none"
    params: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "preset": self.preset,
            "mode": self.mode,
            "precision": self.precision,
            "checkpointing": self.checkpointing,
            "params": dict(self.params),
        }


CASES: tuple[Case, ...] = (
    Case("attention/tiny/train/fp32", "attention"),
    Case("encoder/tiny/train/fp32", "encoder"),
    Case("encoder/tiny/train/fp32/ckpt=full", "encoder", checkpointing="full"),
    Case("resblock/tiny/train/fp32", "resblock"),
    Case("optimizer/tiny/train/fp32", "optimizer"),
)


def case_figures(case: Case, device: str = "cpu") -> dict[str, int]:
    """The integer figures of ``case`` (see the module docstring), freshly built and measured."""
    from bench.harness.flops import count_flops_by_phase
    from bench.harness.memory import measure_memory
    from bench.registry import BuildContext, get_scenario
    from bench.workload import build_step

    spec = get_scenario(case.scenario)
    cfg = spec.make_config(case.preset, **dict(case.params))
    ctx = BuildContext(device=device, mode=case.mode, seed=0)
    _, step = build_step(spec, cfg, ctx, precision=case.precision, checkpointing=case.checkpointing)
    mem = measure_memory(step, device=device, warm=True)
    flops = count_flops_by_phase(step)
    out: dict[str, int] = {f"flops.{phase}": int(n) for phase, n in flops.items()}
    out["flops.total"] = int(sum(flops.values()))
    for phase, d in mem.per_phase.items():
        for key in ("peak_bytes", "activations_peak_bytes", "temporaries_peak_bytes"):
            out[f"mem.{phase}.{key}"] = int(d[key])
    for key in (
        "mem_params_bytes",
        "mem_grads_bytes",
        "mem_optimizer_bytes",
        "mem_activations_bytes",
        "mem_buffers_bytes",
        "mem_inputs_bytes",
    ):
        out["mem." + key.removeprefix("mem_")] = int(getattr(mem, key))
    return dict(sorted(out.items()))


def compute_baseline(cases: Sequence[Case] = CASES) -> dict[str, Any]:
    """The baseline document for ``cases``, computed here and now."""
    import torch

    return {
        "kind": KIND,
        "version": VERSION,
        "about": (
            "Exact FLOPs per step and tracked memory bytes per phase (CPU). `dlbench baseline check` "
            "compares them exactly; after an intended change run `dlbench baseline update` and commit."
        ),
        "torch_version": torch.__version__,
        "device": "cpu",
        "cases": {c.name: {**c.to_dict(), "figures": case_figures(c)} for c in cases},
    }


def load_baseline(path: Path | str | None = None) -> dict[str, Any]:
    """The baseline document at ``path`` (default ``DEFAULT_PATH``); ``UsageError`` if absent or bad."""
    p = Path(path) if path is not None else DEFAULT_PATH
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(
            f"--baseline: {p} does not exist; create it with `dlbench baseline update`"
        ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"--baseline: cannot read {p}: {exc}") from None
    if not isinstance(data, dict) or data.get("kind") != KIND or not isinstance(data.get("cases"), dict):
        raise UsageError(f"--baseline: {p} is not a dlbench baseline file (kind {KIND!r})")
    return data


@dataclass(frozen=True)
class Difference:
    """One figure that is not what the baseline says (None: absent on that side)."""

    case: str
    figure: str
    baseline: int | None
    current: int | None

    def describe(self) -> str:
        if self.baseline is None:
            return f"{self.case}: {self.figure} = {self.current} is not in the baseline"
        if self.current is None:
            return f"{self.case}: {self.figure} (baseline {self.baseline}) is no longer computed"
        rel = f" ({(self.current - self.baseline) / self.baseline:+.2%})" if self.baseline else ""
        return f"{self.case}: {self.figure} = {self.current}, baseline {self.baseline}{rel}"

    def to_dict(self) -> dict[str, Any]:
        return {"case": self.case, "figure": self.figure, "baseline": self.baseline, "current": self.current}


@dataclass
class BaselineReport:
    """The outcome of ``check_baseline``: every difference, per case, and the torch versions."""

    path: Path
    differences: list[Difference]
    cases: dict[str, int]  # case -> number of figures compared
    torch_baseline: str | None
    torch_now: str

    @property
    def ok(self) -> bool:
        return not self.differences

    def lines(self) -> list[str]:
        """Human-readable report: one line per case, one per differing figure, a conclusion."""
        out = [f"baseline {self.path} (torch {self.torch_baseline}; here torch {self.torch_now})"]
        for case, n in self.cases.items():
            diffs = [d for d in self.differences if d.case == case]
            if diffs:
                out.append(f"  FAIL {case}: {len(diffs)} of {n} figures differ")
                out += [f"       {d.describe()}" for d in diffs]
            else:
                out.append(f"  ok   {case}: {n} figures equal")
        if self.ok:
            out.append("baseline check passed: every figure equal")
        else:
            out.append(
                f"baseline check FAILED: {len(self.differences)} figure(s) differ. "
                "If the change is intended, run `dlbench baseline update` and commit the file."
            )
            if self.torch_baseline != self.torch_now:
                out.append(
                    f"note: the baseline was made with torch {self.torch_baseline}, "
                    f"this is torch {self.torch_now}; "
                    "torch's kernels decide what backward saves, so memory figures can move with it."
                )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "dlbench-baseline-check",
            "path": str(self.path),
            "ok": self.ok,
            "torch_baseline": self.torch_baseline,
            "torch_now": self.torch_now,
            "cases": self.cases,
            "differences": [d.to_dict() for d in self.differences],
        }


def compare(
    baseline: Mapping[str, Any], current: Mapping[str, Any]
) -> tuple[list[Difference], dict[str, int]]:
    """Exact comparison of two baseline documents' cases: the differences and figures per case."""
    diffs: list[Difference] = []
    counts: dict[str, int] = {}
    b_cases, c_cases = baseline["cases"], current["cases"]
    for case in sorted(set(b_cases) | set(c_cases)):
        b = dict(b_cases.get(case, {}).get("figures", {}))
        c = dict(c_cases.get(case, {}).get("figures", {}))
        if (
            case in b_cases
            and case in c_cases
            and b_cases[case].get("scenario") != c_cases[case].get("scenario")
        ):
            diffs.append(Difference(case, "scenario", None, None))
        counts[case] = len(set(b) | set(c))
        for fig in sorted(set(b) | set(c)):
            bv, cv = b.get(fig), c.get(fig)
            if bv != cv:
                diffs.append(Difference(case, fig, bv, cv))
    return diffs, counts


def check_baseline(path: Path | str | None = None, cases: Sequence[Case] | None = None) -> BaselineReport:
    """Recompute the figures of ``cases`` (default ``CASES``) and compare them exactly with the file."""
    p = Path(path) if path is not None else DEFAULT_PATH
    base = load_baseline(p)
    now = compute_baseline(CASES if cases is None else cases)
    diffs, counts = compare(base, now)
    return BaselineReport(p, diffs, counts, base.get("torch_version"), now["torch_version"])


def update_baseline(
    path: Path | str | None = None, cases: Sequence[Case] | None = None
) -> tuple[Path, dict[str, Any]]:
    """Recompute the figures and rewrite the baseline file; returns its path and the document."""
    p = Path(path) if path is not None else DEFAULT_PATH
    data = compute_baseline(CASES if cases is None else cases)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(p)
    return p, data
