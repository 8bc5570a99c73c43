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

The files CI holds the tree to -- ``baseline.json`` here and the timing references of
``bench.gate.perf`` (``perf.json``) -- are found, read and written here, the same way:

* **where**: ``results/baseline/`` of the *current* checkout (the nearest folder above the working
  directory holding ``.git``; else the working directory), or the path given -- never the folder
  of the installed package, so ``update`` from a second clone never rewrites another checkout's file;
* **read** (``load_baseline``, ``load_references``): a regular file of JSON, its ``kind`` and
  ``version``, every entry's type (figures are integers; a reference ratio a number in
  ``REFERENCE_RANGE``, a tolerance a fraction) -- all before any work, as ``UsageError`` (exit 2)
  naming the file, the entry and the value;
* **what measured it** (``check_measured_with``): a file made under another torch build, thread
  count or machine kind (``platform.machine()``, where the file records them) is refused before any
  work, unless ``force`` (then each difference is a note). Another CPU model is a note only: CI
  machines of one kind and thread count come with different CPU models from one job to the next,
  and the tolerance of each reference is there to absorb that;
* **write** (``write_document``): checked before the work (``bench.outputs.check_output_path``),
  written atomically (``bench.outputs.write_atomic``: no fixed-name temporary, the old file whole
  on any failure).
"""

from __future__ import annotations

import json
import math
import os
import platform
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import UsageError
from bench.outputs import check_output_path, write_atomic

KIND = "dlbench-baseline"
VERSION = 1
PERF_KIND = "dlbench-perf-ratios"
PERF_VERSION = 1
BASELINE_DIR = Path("results") / "baseline"
BASELINE_NAME = "baseline.json"
PERF_NAME = "perf.json"
#: a NEW/BASE timing ratio of two implementations of one operation; outside this it is no reference
#: (``1e308`` would pass any slowdown)
REFERENCE_RANGE = (0.01, 100.0)
UPDATE_HINT = "dlbench baseline update"
PERF_UPDATE_HINT = "dlbench baseline update --ratios"


# --- where the files are ---------------------------------------------------------------------------


def checkout_root(start: Path | str | None = None) -> Path:
    """The checkout the command runs in: the nearest folder at or above ``start`` (default: the
    working directory) holding ``.git`` (a folder, or a file in a worktree); else ``start`` itself."""
    here = Path(start) if start is not None else Path.cwd()
    here = here.absolute()
    for folder in (here, *here.parents):
        if os.path.lexists(folder / ".git"):
            return folder
    return here


def default_baseline_path() -> Path:
    """``results/baseline/baseline.json`` of the current checkout."""
    return checkout_root() / BASELINE_DIR / BASELINE_NAME


def default_perf_path() -> Path:
    """``results/baseline/perf.json`` of the current checkout."""
    return checkout_root() / BASELINE_DIR / PERF_NAME


# --- reading and checking --------------------------------------------------------------------------


def read_json_file(path: Path, flag: str, hint: str) -> Any:
    """The JSON document at ``path``; ``UsageError`` naming ``flag`` for anything that is not one."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UsageError(f"{flag}: {path} does not exist; create it with `{hint}`") from None
    except OSError as exc:
        raise UsageError(f"{flag}: cannot read {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{flag}: {path} is not a regular file (a folder, a FIFO or a device)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise UsageError(f"{flag}: {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except RecursionError:
        raise UsageError(f"{flag}: {path} is nested too deeply to be a dlbench file") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{flag}: cannot read {path}: {exc}") from None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _check_optional_str(p: Path, flag: str, data: Mapping[str, Any], key: str) -> None:
    v = data.get(key)
    if v is not None and not isinstance(v, str):
        raise UsageError(f"{flag}: {p}: {key!r} must be text, got {v!r}")


def _check_machine_fields(p: Path, flag: str, data: Mapping[str, Any]) -> None:
    for key in ("torch_version", "machine", "cpu_model", "device", "measured_at", "about"):
        _check_optional_str(p, flag, data, key)
    for key in ("threads", "cpu_count"):
        v = data.get(key)
        if v is not None and not (_is_int(v) and v > 0):
            raise UsageError(f"{flag}: {p}: {key!r} must be a positive integer, got {v!r}")


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
        "machine": platform.machine(),
        "device": "cpu",
        "cases": {c.name: {**c.to_dict(), "figures": case_figures(c)} for c in cases},
    }


def load_baseline(path: Path | str | None = None) -> dict[str, Any]:
    """The baseline document at ``path`` (default: this checkout's), checked; ``UsageError`` if bad.

    Checked before any figure is computed: ``kind``, ``version``, and every case an object whose
    ``scenario`` is text and whose ``figures`` map names to integers.
    """
    p = Path(path) if path is not None else default_baseline_path()
    flag = "--baseline"
    data = read_json_file(p, flag, UPDATE_HINT)
    if not isinstance(data, dict) or data.get("kind") != KIND or not isinstance(data.get("cases"), dict):
        raise UsageError(f"{flag}: {p} is not a dlbench baseline file (kind {KIND!r})")
    if data.get("version") != VERSION:
        raise UsageError(
            f"{flag}: {p} has version {data.get('version')!r}; this dlbench reads version {VERSION}: "
            f"rewrite it with `{UPDATE_HINT}`"
        )
    _check_machine_fields(p, flag, data)
    for name, case in data["cases"].items():
        if not isinstance(case, dict):
            raise UsageError(f"{flag}: {p}: case {name!r} must be an object, got {type(case).__name__}")
        if not isinstance(case.get("scenario"), str):
            got = case.get("scenario")
            raise UsageError(f"{flag}: {p}: case {name!r}: 'scenario' must be text, got {got!r}")
        figures = case.get("figures")
        if not isinstance(figures, dict):
            raise UsageError(f"{flag}: {p}: case {name!r}: 'figures' must be an object")
        for fig, v in figures.items():
            if not (_is_int(v) and v >= 0):
                raise UsageError(
                    f"{flag}: {p}: case {name!r}: figure {fig!r} must be an integer >= 0, got {v!r}"
                )
    return data


def load_references(path: Path | str | None = None) -> dict[str, Any]:
    """The timing references (``perf.json``) at ``path`` (default: this checkout's), checked.

    ``UsageError`` before any work for: not a reference file, another version, a check that is not
    an object, a ``reference`` outside ``REFERENCE_RANGE``, a ``tolerance`` outside [0, 1], no
    ``config``, wrongly typed machine fields.
    """
    p = Path(path) if path is not None else default_perf_path()
    flag = "--perf"
    data = read_json_file(p, flag, PERF_UPDATE_HINT)

    def bad(why: str) -> UsageError:
        return UsageError(f"{flag}: {p}: {why}")

    if not isinstance(data, dict) or data.get("kind") != PERF_KIND:
        raise bad(f"not a dlbench perf reference file (kind {PERF_KIND!r})")
    if not isinstance(data.get("checks"), dict):
        raise bad(f"not a dlbench perf reference file (kind {PERF_KIND!r})")
    if data.get("version") != PERF_VERSION:
        raise bad(f"version {data.get('version')!r}, expected {PERF_VERSION}")
    _check_machine_fields(p, flag, data)
    lo, hi = REFERENCE_RANGE
    for name, entry in data["checks"].items():
        if not isinstance(entry, dict):
            raise bad(f"check {name!r}: expected an object")
        ref: Any = entry.get("reference")
        tol: Any = entry.get("tolerance")
        if not (_is_number(ref) and lo <= ref <= hi):
            raise bad(
                f"check {name!r}: 'reference' must be a NEW/BASE ratio from {lo:g} to {hi:g}, got {ref!r}"
            )
        if not (_is_number(tol) and 0 <= tol <= 1):
            raise bad(f"check {name!r}: 'tolerance' must be a fraction from 0 to 1, got {tol!r}")
        if not isinstance(entry.get("config"), dict):
            raise bad(f"check {name!r}: no 'config'")
    return data


def worker_threads() -> int | None:
    """The intra-op threads a fresh torch process starts with here (what a gate worker runs on).

    torch's default: ``OMP_NUM_THREADS`` (or ``MKL_NUM_THREADS``) when set, else the physical cores.
    Not ``torch.get_num_threads()`` of this process, which may have been changed (tests set 1).
    """
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        v = os.environ.get(var, "").strip()
        if v.isdigit() and int(v) > 0:
            return int(v)
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count()


def measured_here() -> dict[str, Any]:
    """What a baseline or reference depends on, here: torch build, threads, machine kind."""
    import torch

    from bench.harness.env import cpu_model

    return {
        "torch_version": torch.__version__,
        "threads": worker_threads(),
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
    }


# differences that are noted but never refuse a file (see the module docstring)
NOTE_ONLY = ("cpu_model",)

MEASURED_WITH_TEXT = {
    "torch_version": "torch build",
    "threads": "thread count",
    "machine": "machine kind",
    "cpu_model": "CPU model",
}


def check_measured_with(
    doc: Mapping[str, Any],
    here: Mapping[str, Any],
    *,
    path: Path,
    flag: str,
    keys: Sequence[str] = tuple(MEASURED_WITH_TEXT),
    force: bool = False,
) -> list[str]:
    """The differences between what measured ``doc`` and ``here`` (fields the file records).

    ``UsageError`` naming each (exit 2, before any work) unless ``force``; then one note each.
    """
    def differ(k: str) -> bool:
        return doc.get(k) is not None and here.get(k) is not None and doc[k] != here[k]

    diffs = [
        f"{MEASURED_WITH_TEXT.get(k, k)} {doc[k]!r} there, {here.get(k)!r} here"
        for k in keys
        if differ(k) and k not in NOTE_ONLY
    ]
    soft = [
        f"{path} was measured on another CPU model ({doc[k]!r} there, {here.get(k)!r} here)"
        for k in keys
        if differ(k) and k in NOTE_ONLY
    ]
    if diffs and not force:
        raise UsageError(
            f"{flag}: {path} was measured elsewhere ({'; '.join(diffs)}): its figures do not hold here. "
            "Measure your own (`dlbench baseline update`, with --ratios for perf.json) or pass --force "
            "to check against it anyway"
        )
    return soft + [f"{path} was measured with another setup: {d} (--force)" for d in diffs]


def check_writable(path: Path | str, flag: str) -> Path:
    """``path`` checked as an output before the work that produces it (``check_output_path``)."""
    return check_output_path(path, flag=flag)


def write_document(path: Path | str, doc: Mapping[str, Any]) -> None:
    """Write a baseline or reference document atomically (``OutputWriteError`` on failure)."""
    write_atomic(path, json.dumps(doc, indent=2) + "\n")


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
    notes: list[str] = field(default_factory=list)

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
        out += [f"note: {n}" for n in self.notes]
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
            "notes": list(self.notes),
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


def check_baseline(
    path: Path | str | None = None, cases: Sequence[Case] | None = None, *, force: bool = False
) -> BaselineReport:
    """Recompute the figures of ``cases`` (default ``CASES``) and compare them exactly with the file.

    The file is checked first (``load_baseline``), then what measured it: another torch build or
    machine kind is ``UsageError`` unless ``force`` (torch's kernels decide what backward saves).
    """
    p = Path(path) if path is not None else default_baseline_path()
    base = load_baseline(p)
    notes = check_measured_with(
        base, measured_here(), path=p, flag="--baseline", keys=("torch_version", "machine"), force=force
    )
    now = compute_baseline(CASES if cases is None else cases)
    diffs, counts = compare(base, now)
    report = BaselineReport(p, diffs, counts, base.get("torch_version"), now["torch_version"])
    report.notes = notes
    return report


def update_baseline(
    path: Path | str | None = None, cases: Sequence[Case] | None = None
) -> tuple[Path, dict[str, Any]]:
    """Recompute the figures and rewrite the baseline file atomically; returns its path and the document."""
    p = check_writable(Path(path) if path is not None else default_baseline_path(), "--baseline")
    data = compute_baseline(CASES if cases is None else cases)
    write_document(p, data)
    return p, data
