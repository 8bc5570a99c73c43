"""dlbench's scenarios as pytest-benchmark benchmarks: ``pytest bench/benchmarks --benchmark-json out.json``.

Why: teams that already gate on pytest-benchmark get dlbench's workloads (the very step
``dlbench run`` measures, built by ``bench.workload.build_step``) in their own runner, and
``dlbench compare a.json b.json`` reads what they saved (``bench.results.pytest_benchmark``),
matched to each other or to CSV rows by configuration.

- ``dlbench_step``: a fixture parametrized indirectly with ``BenchCase`` values; it builds the
  step (a scenario that cannot run here, such as amp-fp16 on CPU, is skipped) and returns a
  ``DlbenchStep`` whose ``run(benchmark)`` warms up, then times it with ``benchmark(...)``.
- The timed function is the whole step followed by ``torch.cuda.synchronize`` on CUDA, so the
  host clock pytest-benchmark reads covers the GPU work (the previous call ended synchronized, so
  the device is idle when a round starts). pytest-benchmark's own calibration, rounds,
  ``--benchmark-min-rounds`` and ``--benchmark-max-time`` apply; its warm-up is off by default on
  CPython, so ``run`` makes ``warmup_iters`` untimed calls first (backward and optimizer included).
- ``extra_info["dlbench"]`` holds the configuration (the fields ``dlbench compare`` matches on),
  the environment fingerprint's comparable fields, and ``items_per_step`` / ``unit`` for throughput.

Which cases ``bench/benchmarks`` runs (``default_cases``), from environment variables:
``DLBENCH_BENCH_SCENARIOS`` (comma list; default every non-test scenario), ``DLBENCH_BENCH_MODES``
(default each scenario's modes), ``DLBENCH_BENCH_PRECISIONS`` (default fp32), ``DLBENCH_BENCH_PRESET``
(default tiny), ``DLBENCH_BENCH_DEVICE`` (default cuda when available, else cpu). Use the fixture in
your own tests with ``-p bench.pytest_plugin`` or by importing it into a conftest.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import pytest

from bench.results.pytest_benchmark import EXTRA_KEY

WARMUP_ITERS = 3
_ENV_FIELDS = ("torch_version", "device", "device_name", "threads", "cpu_model")


@dataclass(frozen=True)
class BenchCase:
    """One configuration to benchmark: a scenario, its mode, technique settings and parameters."""

    scenario: str
    mode: str = "train"
    precision: str = "fp32"
    checkpointing: str = "none"
    preset: str = "tiny"
    device: str = "cpu"
    params: tuple[tuple[str, Any], ...] = ()
    seed: int = 0
    channels_last: bool = False

    @property
    def id(self) -> str:
        """The test id: ``attention-train-fp32`` (+ checkpointing, parameters, preset when not tiny)."""
        parts = [self.scenario, self.mode, self.precision]
        if self.checkpointing != "none":
            parts.append(f"ckpt={self.checkpointing}")
        parts += [f"{k}={v}" for k, v in self.params]
        if self.preset != "tiny":
            parts.append(self.preset)
        if self.channels_last:
            parts.append("cl")
        return "-".join(parts)


def _env_list(name: str) -> list[str] | None:
    raw = os.environ.get(name, "").strip()
    return [x.strip() for x in raw.split(",") if x.strip()] or None


def default_device() -> str:
    """``$DLBENCH_BENCH_DEVICE``, else cuda when available, else cpu."""
    dev = os.environ.get("DLBENCH_BENCH_DEVICE", "").strip()
    if dev:
        return dev
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_cases() -> list[BenchCase]:
    """Every (non-test) scenario x its modes x the precisions, on one device and preset (see module doc)."""
    from bench.registry import load_scenarios

    specs = load_scenarios()
    names = _env_list("DLBENCH_BENCH_SCENARIOS") or [n for n, s in sorted(specs.items()) if not s.test_only]
    modes = _env_list("DLBENCH_BENCH_MODES")
    precisions = _env_list("DLBENCH_BENCH_PRECISIONS") or ["fp32"]
    preset = os.environ.get("DLBENCH_BENCH_PRESET", "").strip() or "tiny"
    device = default_device()
    cases = []
    for name in names:
        if name not in specs:
            raise pytest.UsageError(f"DLBENCH_BENCH_SCENARIOS: unknown scenario {name!r}; see dlbench list")
        for mode in modes or list(specs[name].modes):
            for precision in precisions:
                cases.append(BenchCase(name, mode, precision, preset=preset, device=device))
    return cases


@cache
def _env(device: str) -> dict[str, Any]:
    from bench.harness.env import env_fingerprint

    fp = env_fingerprint(device)
    return {k: fp.get(k) for k in _ENV_FIELDS}


@dataclass
class DlbenchStep:
    """A built step ready to time: ``run(benchmark)`` times it and records what it was."""

    case: BenchCase
    step: Callable[[], None]
    config: dict[str, Any]  # the match fields of ``dlbench compare`` (+ param_*)
    items_per_step: int
    unit: str
    extra: dict[str, Any] = field(default_factory=dict)

    def timed(self) -> Callable[[], None]:
        """The function pytest-benchmark times: the step, then a CUDA synchronize on CUDA."""
        step = self.step
        if not self.case.device.startswith("cuda"):
            return step
        import torch

        device = self.case.device

        def synced() -> None:
            step()
            torch.cuda.synchronize(device)

        return synced

    def run(self, benchmark: Any, *, warmup_iters: int = WARMUP_ITERS) -> Any:
        """Warm up (untimed), fill ``extra_info``, and time the step with ``benchmark(...)``."""
        fn = self.timed()
        for _ in range(warmup_iters):
            fn()
        benchmark.group = self.case.scenario
        benchmark.extra_info[EXTRA_KEY] = {
            "config": dict(self.config),
            "env": _env(self.case.device),
            "items_per_step": self.items_per_step,
            "unit": self.unit,
            "preset": self.case.preset,
            "extra": {k: v for k, v in self.extra.items() if isinstance(v, str | int | float | bool)},
        }
        return benchmark(fn)


def build(case: BenchCase) -> DlbenchStep:
    """Build ``case``'s step exactly as ``dlbench run`` does; ``pytest.skip`` where it cannot run here."""
    from bench.registry import BuildContext, get_scenario
    from bench.run.grid import config_skip_reason, expand_grid
    from bench.workload import build_step

    spec = get_scenario(case.scenario)
    (cfg,) = expand_grid(
        spec,
        preset=case.preset,
        modes=[case.mode],
        precisions=[case.precision],
        checkpointing=[case.checkpointing],
        axes={k: [v] for k, v in case.params},
        device=case.device,
        seed=case.seed,
        channels_last=case.channels_last,
    )
    why = config_skip_reason(spec, cfg)
    if why is not None:
        pytest.skip(why)
    if case.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA device")
    scfg = spec.make_config(cfg.preset, **cfg.params_dict)
    ctx = BuildContext(device=cfg.device, mode=cfg.mode, seed=cfg.seed, channels_last=cfg.channels_last)
    workload, step = build_step(spec, scfg, ctx, precision=cfg.precision, checkpointing=cfg.checkpointing)
    params = cfg.params_dict
    config: dict[str, Any] = {
        "scenario": cfg.scenario,
        "mode": cfg.mode,
        "precision": cfg.precision,
        "checkpointing": cfg.checkpointing,
        "compile": "none",  # the benchmarks time eager steps
        "parallel": "none",
        "world_size": 1,
        "device": cfg.device,
        "channels_last": cfg.channels_last,
        "seed": cfg.seed,
        "batch_size": params.get("batch_size"),
        **{f"param_{k}": v for k, v in params.items() if k != "batch_size"},
    }
    return DlbenchStep(case, step, config, workload.items_per_step, workload.unit, dict(workload.extra))


@pytest.fixture
def dlbench_step(request: pytest.FixtureRequest) -> Iterator[DlbenchStep]:
    """The step of the ``BenchCase`` this fixture is parametrized with (``indirect=True``)."""
    case = getattr(request, "param", None)
    if not isinstance(case, BenchCase):
        raise pytest.UsageError(
            "dlbench_step: parametrize it indirectly with BenchCase values, e.g. "
            "@pytest.mark.parametrize('dlbench_step', [BenchCase('attention')], indirect=True)"
        )
    yield build(case)
