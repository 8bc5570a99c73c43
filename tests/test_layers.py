"""The import layers, checked in a fresh interpreter through ``sys.modules`` (lazy imports count).

- statistics, the results schema/store/load, the report layer and the profile summary import neither
  torch nor rich;
- the library (``bench.api`` and everything below it) imports neither rich nor typer;
- scenarios never import the runner (``bench.run``) or the results (``bench.results``);
- dlcore never imports bench.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _loaded_after(code: str) -> set[str]:
    """Top-level and bench/dlcore module names in ``sys.modules`` after running ``code``."""
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _has(mods: set[str], pkg: str) -> bool:
    return pkg in mods or any(m.startswith(pkg + ".") for m in mods)


TORCH_FREE = [
    "import bench.stats",
    "import bench.results",
    "import bench.results.schema, bench.results.store, bench.results.loader, bench.outputs",
    "import bench.results.compare_spec, bench.results.compare_inputs, bench.results.compare_pairs",
    "import bench.report.escape, bench.report.folder",
    "import bench.report.format, bench.report.markdown, bench.report.gpu_summary",
    "import bench.report.build, bench.report.html, bench.report.plots, bench.report.compare_format",
    "import bench.report.figures_common, bench.report.figures_perf, bench.report.figures_memory",
    "import bench.report.figures_efficiency, bench.report.figures_compare",
    # the profile package resolves its names lazily: its summary and HTA parts need no torch
    "import bench.profile, bench.profile.summary, bench.profile.hta",
    "import bench.errors, bench.constraints, bench.registry",
    # what every command uses to own, clean up and write: the standard library (and psutil) only
    "import bench.owned, bench._guardian, bench.signals, bench.outputs",
    "import bench.run.request, bench.run.sweep, bench.run.grid",
    "import bench.gate, bench.gate.perf, bench.gate.baseline, bench.gate.interleave",
    "import bench.bisect, bench.bisect.search, bench.bisect.history, bench.bisect.plan, bench.bisect.render",
    "import bench.results.compare, bench.results.pytest_benchmark",
    # the public API loads no scenario, no user code and no torch until it is used
    "import bench.api; from bench.api import scenario",
    "import bench.foreign, bench.foreign.names, bench.foreign.resolve, bench.foreign.factory",
    # dlbench budget: the search, the fit rules and the summary are torch-free; so is planning's import
    "import bench.stats.pareto, bench.budget.search, bench.budget.fit, bench.report.budget",
    "import bench.budget.plan, bench.budget.engine",
]


@pytest.mark.parametrize("code", TORCH_FREE)
def test_stats_results_and_report_import_neither_torch_nor_rich(code: str) -> None:
    mods = _loaded_after(code)
    assert not _has(mods, "torch"), f"{code!r} imported torch"
    assert not _has(mods, "rich") and not _has(mods, "typer"), f"{code!r} imported rich or typer"


def test_library_imports_no_presentation_even_when_it_runs() -> None:
    # import the API and run a whole (tiny, in-process) measurement: lazy imports are caught too
    code = (
        "import tempfile, pathlib, bench.api as api\n"
        "d = tempfile.mkdtemp()\n"
        "s = api.run('_linear', modes='forward', device='cpu', isolation=False, max_time_s=0.05,"
        " progress=True, out=pathlib.Path(d) / 'x.csv')\n"
        "assert s.exit_code == 0, s.rows\n"
        "import bench.run.measure, bench.run.execute, bench.run.plan, bench.workload, bench.harness\n"
    )
    mods = _loaded_after(code)
    assert _has(mods, "torch")  # it did measure
    assert not _has(mods, "rich"), "the library imported rich"
    assert not _has(mods, "typer"), "the library imported typer"


def test_scenarios_never_import_the_runner_or_results() -> None:
    mods = _loaded_after("import bench.registry as r; r.load_scenarios()")
    assert _has(mods, "bench.scenarios.attention")
    assert not _has(mods, "bench.run"), sorted(m for m in mods if m.startswith("bench.run"))
    assert not _has(mods, "bench.results")
    assert not _has(mods, "bench.api")
    assert not _has(mods, "bench.foreign")  # built-in names never load the foreign resolver


def test_foreign_models_never_import_the_runner_or_results(tmp_path: Path) -> None:
    # the factory imports Workload from bench.workload: bench.api, a user's usual import, is the façade
    # over the runner, and it would be the user's module that loads it, not bench.foreign
    factory = tmp_path / "m.py"
    factory.write_text(
        "import torch\n"
        "from bench.workload import Workload\n"
        "def build(batch_size: int = 2) -> Workload:\n"
        "    return Workload(model=torch.nn.Linear(2, 2), inputs=(torch.randn(batch_size, 2),))\n",
        encoding="utf-8",
    )
    code = (
        "import bench.registry as r\n"
        f"spec = r.get_scenario({f'{factory}:build'!r})\n"
        "spec.build(spec.make_config('tiny'), r.BuildContext(device='cpu', mode='train'))\n"
        "import bench.foreign.prepare, bench.foreign.blocks\n"
        "import bench.foreign.timm_models, bench.foreign.hf_models\n"
    )
    mods = _loaded_after(code)
    assert _has(mods, "bench.foreign.factory") and _has(mods, "torch")
    assert not _has(mods, "bench.run"), sorted(m for m in mods if m.startswith("bench.run"))
    assert not _has(mods, "bench.results") and not _has(mods, "bench.api")
    assert not _has(mods, "timm") and not _has(mods, "transformers")  # only a timm:/hf: name loads them


def test_dlcore_never_imports_bench() -> None:
    names = sorted(p.stem for p in (ROOT / "dlcore").rglob("*.py"))
    code = "import importlib, pkgutil, dlcore\n" + "\n".join(
        [
            "for m in pkgutil.walk_packages(dlcore.__path__, 'dlcore.'):",
            "    if 'examples' not in m.name:",
            "        importlib.import_module(m.name)",
            "for n in dlcore.__all__:",
            "    getattr(dlcore, n)",
        ]
    )
    assert names  # dlcore has modules to check
    mods = _loaded_after(code)
    assert not _has(mods, "bench"), sorted(m for m in mods if m.startswith("bench"))


def test_import_layer_check_would_catch_a_violation() -> None:
    # the probe itself must see a lazy import: importing the console pulls rich in
    assert _has(_loaded_after("import bench.console"), "rich")
