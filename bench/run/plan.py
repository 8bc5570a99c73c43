"""From a run request to a plan: everything validated and the output file open, nothing run yet.

``plan_run`` is where bad input stops, with a ``UsageError`` naming the argument, before any child
process starts: the request's own values (``RunRequest.build``), the scenario, preset and device,
every scenario parameter (parsed by the registry), every grid point's config (built in the parent,
so a value a builder would reject fails here), and the output file (writable, same column set).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import results
from bench.errors import UsageError
from bench.registry import ScenarioSpec, get_scenario
from bench.run.execute import new_run_id
from bench.run.grid import RunConfig, expand_grid
from bench.run.request import RunRequest
from bench.run.sweep import load_sweep


@dataclass
class RunPlan:
    """A validated run: the grid, where it goes, how it is measured."""

    spec: ScenarioSpec
    configs: list[RunConfig]
    writer: results.ResultsWriter
    request: RunRequest  # device and precisions resolved
    run_id: str = ""

    @property
    def device(self) -> str:
        assert self.request.device is not None
        return self.request.device

    @property
    def isolation(self) -> bool:
        return self.request.isolation

    @property
    def resume(self) -> bool:
        return self.request.resume

    @property
    def options(self) -> RunRequest:
        return self.request


def default_device() -> str:
    """ "cuda" when CUDA is available, else "cpu"."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(device: str) -> str:
    """``device`` if it names a device that exists here, else ``UsageError``."""
    import torch

    m = re.fullmatch(r"(cpu|cuda)(?::(\d+))?", device.strip())
    if not m or (m.group(1) == "cpu" and m.group(2) is not None):
        raise UsageError(f"--device: unknown device {device!r}; expected cpu, cuda or cuda:N")
    if m.group(1) == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(
                f"--device {device}: CUDA is not available here (torch {torch.__version__}, "
                f"cuda build: {torch.version.cuda or 'none'}); use --device cpu"
            )
        idx = int(m.group(2) or 0)
        if idx >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
    return device.strip()


def _open_writer(spec: ScenarioSpec, out: Path) -> results.ResultsWriter:
    """The writer of ``out``; an existing file must hold the same columns (it is appended to)."""
    columns = results.columns_for(spec.parameters())
    if out.exists() and out.is_dir():
        raise UsageError(f"--out: {out} is a directory; give a file name such as {out / 'results.csv'}")
    try:
        writer = results.ResultsWriter(out, columns)
    except (results.SchemaMismatchError, results.ResultsFileError) as exc:
        raise UsageError(f"--out: {exc}") from None
    except OSError as exc:
        where = exc.filename or out
        raise UsageError(f"--out: cannot write {where}: {exc.strerror or exc}") from None
    try:
        writer.lock()
    except results.ResultsLockedError as exc:
        raise UsageError(f"--out: {exc}") from None
    return writer


def check_environment() -> None:
    """The environment variables dlbench reads, parsed like any option (``UsageError`` if bad)."""
    import os

    from bench.constraints import Check, parse

    raw = os.environ.get("DLBENCH_PEAK_TTL_S", "").strip()
    if raw:
        parse(float, "DLBENCH_PEAK_TTL_S (seconds)", raw, Check("nonneg"))
    from bench.harness.peak import repair_cache

    try:
        repair_cache()  # a corrupt peak cache is advisory: one warning, rewritten with its valid entries
    except OSError:
        pass


def cpu_cores() -> int:
    """The CPU cores this process may run on (its affinity mask; ``os.cpu_count`` where unknown)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def check_launch(req: RunRequest, device: str) -> None:
    """The launch options of parallel configurations, checked before anything starts.

    - ``--nproc`` on CPU: at most the cores this process may use, unless ``--oversubscribe`` (more
      ranks than cores time the contention between them, not the strategy);
    - an etcd rendezvous backend needs the ``etcd`` package (torch imports it in the launcher,
      where its absence would surface as a failed job);
    - ``--rdzv-endpoint``: its host must resolve (a typo would surface as ranks that never start).
    """
    if all(p == "none" for p in req.parallel):
        return
    ranks_on_cpu = any(p in ("ddp", "fsdp", "pipeline") for p in req.parallel)
    if ranks_on_cpu and not device.startswith("cuda") and not req.oversubscribe:
        cores = cpu_cores()
        if req.nproc > cores:
            raise UsageError(
                f"--nproc: {req.nproc} ranks per node on the CPU, but this machine has {cores} core(s) "
                "for this process: the ranks would share cores and the timing would measure their "
                f"contention; use --nproc {cores} or fewer, or --oversubscribe to run them anyway"
            )
    if req.rdzv_backend in ("etcd", "etcd-v2"):
        import importlib.util

        if importlib.util.find_spec("etcd") is None:
            raise UsageError(
                f"--rdzv-backend {req.rdzv_backend}: needs the python-etcd package (`import etcd`), which "
                "is not installed here; use the default c10d backend, or pip install python-etcd"
            )
    if req.rdzv_endpoint is not None:
        import socket

        host, _, port = req.rdzv_endpoint.strip().rpartition(":")
        try:
            socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise UsageError(f"--rdzv-endpoint: cannot resolve host {host!r}: {exc}") from None


def make_request(
    scenario: str | None = None, *, sweep: str | Path | None = None, **options: Any
) -> RunRequest:
    """The ``RunRequest`` of explicit options (None = not given) over a sweep file over the defaults."""
    unknown = sorted(set(options) - set(RunRequest.options()))
    if unknown:
        raise TypeError(f"unknown run option(s) {unknown}; expected some of {sorted(RunRequest.options())}")
    sw = None
    if sweep is not None:
        sw = load_sweep(sweep).request_fields()
        if scenario is not None and scenario != sw["scenario"]:
            raise UsageError(f"--sweep: {sweep} is for scenario {sw['scenario']!r}, not {scenario!r}")
    return RunRequest.build({"scenario": scenario, **options}, sw, sweep_label=f"--sweep {sweep}")


def plan_run(scenario: str | None = None, *, sweep: str | Path | None = None, **options: Any) -> RunPlan:
    """Validate everything ``run`` takes (``UsageError`` otherwise) and open the output file."""
    from bench.workload import preferred_amp

    req = make_request(scenario, sweep=sweep, **options)
    check_environment()
    if req.scenario is None:
        raise UsageError("scenario: give a scenario name (see `dlbench list`) or --sweep FILE.toml")
    try:
        spec = get_scenario(req.scenario)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if req.preset not in spec.presets:
        raise UsageError(f"--preset: unknown preset {req.preset!r}; {spec.name!r} has {sorted(spec.presets)}")
    device = check_device(req.device if req.device is not None else default_device())
    precisions = list(req.precisions) if req.precisions is not None else ([] if req.amp else ["fp32"])
    if req.amp:
        precisions.append(preferred_amp(device))
    req = dataclasses.replace(req, device=device, precisions=tuple(dict.fromkeys(precisions)))
    check_launch(req, device)
    try:
        axes = {
            name: list(dict.fromkeys(spec.coerce(name, v) for v in values))
            for name, values in req.params.items()
        }
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        configs = expand_grid(
            spec,
            preset=req.preset,
            modes=req.modes,
            precisions=req.precisions or (),
            checkpointing=req.checkpointing,
            axes=axes,
            device=device,
            seed=req.seed,
            channels_last=req.channels_last,
            parallel=req.parallel,
            nproc=req.nproc,
            nnodes=req.nnodes,
            microbatches=req.microbatches,
            pipeline_schedule=req.pipeline_schedule,
            compile=req.compile,
        )
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{spec.name}: invalid configuration: {exc}") from None
    run_id = new_run_id()
    if req.out is not None:
        out_path = req.out
    else:
        import torch

        latest = (
            results.latest_out_path(spec.name, device, torch_version=torch.__version__)
            if req.resume
            else None
        )
        out_path = latest or results.default_out_path(
            spec.name, device, torch_version=torch.__version__, run_tag=run_id.rsplit("-", 1)[-1]
        )
    return RunPlan(
        spec=spec, configs=configs, writer=_open_writer(spec, out_path), request=req, run_id=run_id
    )
