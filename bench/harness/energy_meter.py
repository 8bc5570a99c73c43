"""Read the energy counters of the measured devices through Zeus, around the timed window.

The counters are read through Zeus (ml-energy/zeus, the optional extra ``dlbench[energy]``): a
``ZeusMonitor`` measurement window reads the hardware energy counters of the measured devices when
it opens and when it closes. The source, by device (a row's ``energy_source``):

- ``nvml``: NVIDIA GPUs from Volta on, NVML's total-energy counter
  (``nvmlDeviceGetTotalEnergyConsumption``, millijoules since the driver loaded);
- ``nvml-power`` / ``amdsmi-power``: GPUs without an energy counter (pre-Volta NVIDIA, some AMD):
  Zeus polls their power in a helper process and integrates it (the integration is Zeus's);
- ``amdsmi``: AMD GPUs with an energy counter;
- ``rapl-package``: CPUs (Intel, and AMD through the same powercap interface), RAPL's package
  counter, with its wrap-around handled by Zeus. The package counter covers the whole package:
  every process and idle core on it counts too (``energy_scope`` = ``cpu-package``; the row's
  ``noise_other_cpu_pct`` says how much of the machine others used meanwhile).

What is measured: a CUDA row its GPU (the CUDA index this process sees; Zeus applies
``CUDA_VISIBLE_DEVICES``), a CPU row every RAPL package of the machine. In a parallel job each rank
measures its own devices and the row sums them (``bench.harness.energy.merge_ranks``).

The window: ``bench.harness.timing.time_step`` (and ``bench.run.parallel.time_distributed``) call
``EnergyMeter.begin`` after the device is synchronized and before the first timed step, and ``end``
after the last timed step has finished, so the joules cover the same steps as the step time (plus
the stopping rule's bookkeeping between batches, which is small). With a counter present the timing
pass samples for at least the counter's minimum window (``EnergyMeter.min_time_s``: 2 s on NVML,
0.1 s on RAPL; ``bench.harness.energy``), so the step time then has more samples; when
``--max-time`` is shorter than that window the timing is left as it was and the cells stay empty,
with the reason in the row's ``reason``.

Where there is no counter (no RAPL, RAPL readable only by root, no GPU counter) or Zeus is not
installed, the result is ``unavailable`` with the reason; ``dlbench env`` and the row's sidecar
state it, and the cells stay empty. On a CPU row Zeus is asked only when the powercap folder it
reads RAPL from exists (its own first check), so a machine without RAPL does not pay Zeus's imports
(httpx, pydantic; rich through httpx) in every measuring process.

Zeus windows are keyed by name and independent: they nest and overlap (a user's own window around
a dlbench measurement is unaffected). RAPL's wrap-around tracker and the power poller of older
GPUs are helper processes Zeus starts; ``EnergyMeter.close`` stops them (a rank leaves with
``os._exit``, which skips Zeus's ``atexit`` clean-up). What Zeus logs while looking for devices is
collected into the reason, not printed.

Run ``python -m bench.harness.energy_meter [DEVICE]`` to print what would be measured and the
counter's observed update period.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any

from bench.harness.energy import EnergyResult, min_window_s

INSTALL_HINT = "install dlbench[energy] (pip install 'dlbench[energy]') to read energy counters through Zeus"
# Where Zeus looks for RAPL (zeus.device.cpu.rapl.RAPL_DIR and CONTAINER_RAPL_DIR).
RAPL_DIRS: tuple[str, ...] = ("/sys/class/powercap/intel-rapl", "/zeus_sys/class/powercap/intel-rapl")


@dataclass(frozen=True)
class EnergySource:
    """What a meter on some devices would read: a source and its Zeus indices, or why nothing."""

    source: str = ""
    scope: str = ""
    devices: tuple[str, ...] = ()
    gpu_indices: tuple[int, ...] = ()
    cpu_indices: tuple[int, ...] = ()
    reason: str = ""  # why there is no source ("" when there is one)
    detail: tuple[str, ...] = ()  # what Zeus logged while looking

    @property
    def available(self) -> bool:
        return bool(self.source)

    @property
    def min_window_s(self) -> float:
        return min_window_s(self.source) if self.available else 0.0

    def describe(self) -> str:
        """One line for ``dlbench env``."""
        if not self.available:
            return f"none: {self.reason}"
        line = f"{self.source} via Zeus {_zeus_version()} on {', '.join(self.devices)}"
        if self.scope == "cpu-package":
            line += " (RAPL counts the whole CPU package: other processes count too)"
        return line


def zeus_installed() -> bool:
    return importlib.util.find_spec("zeus") is not None


def _zeus_version() -> str:
    try:
        from importlib.metadata import version

        return version("zeus")
    except Exception:
        return "?"


@contextmanager
def _zeus_log() -> Iterator[list[str]]:
    """Collect what Zeus logs (INFO and up) while it looks for devices, without printing it."""
    records: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    log = logging.getLogger("zeus")
    handler = _Collect(logging.INFO)
    old_level, old_propagate = log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        yield records
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)
        log.propagate = old_propagate


@cache
def _gpu_manager() -> tuple[Any, str, tuple[str, ...]]:
    """Zeus's GPU manager (or None), why not, and what Zeus logged (once per process, as Zeus)."""
    with _zeus_log() as logged:
        try:
            from zeus.device.gpu import get_gpus

            return get_gpus(), "", tuple(logged)
        except Exception as exc:  # ZeusGPUInitError, or a vendor library that fails oddly
            return None, f"{type(exc).__name__}: {exc}", tuple(logged)


@cache
def _cpu_manager() -> tuple[Any, str, tuple[str, ...]]:
    """Zeus's RAPL manager (or None), why not, and what Zeus logged."""
    with _zeus_log() as logged:
        try:
            from zeus.device.cpu import get_cpus
            from zeus.device.cpu.common import ZeusCPUNoPermissionError

            try:
                return get_cpus(), "", tuple(logged)
            except ZeusCPUNoPermissionError as exc:
                why = f"RAPL is there but not readable by this user (root, or Zeus's zeusd daemon): {exc}"
                return None, why, tuple(logged)
        except Exception as exc:
            return None, f"{type(exc).__name__}: {exc}", tuple(logged)


def _cuda_index(device: str) -> int:
    _, _, idx = device.partition(":")
    if idx:
        return int(idx)
    import torch  # a bare "cuda": the current device (bench.run.measure makes it current)

    return int(torch.cuda.current_device())


def find_source(devices: Sequence[str]) -> EnergySource:
    """The counter a meter on ``devices`` (torch device strings, all CUDA or all ``cpu``) reads.

    CUDA devices: their GPUs through Zeus (NVML or amdsmi). ``cpu``: every RAPL package, through
    Zeus, when the powercap folder Zeus reads RAPL from exists.
    """
    devs = list(devices) or ["cpu"]
    if not zeus_installed():
        return EnergySource(reason=f"Zeus is not installed: {INSTALL_HINT}")
    if all(d.startswith("cuda") for d in devs):
        gpus, why, logged = _gpu_manager()
        if gpus is None:
            said = f"; Zeus: {'; '.join(logged)}" if logged else ""
            return EnergySource(
                reason=f"no GPU energy counter: Zeus found neither NVML nor amdsmi ({why}{said})",
                detail=logged,
            )
        idx = tuple(sorted({_cuda_index(d) for d in devs}))
        try:
            missing = [i for i in idx if i >= len(gpus)]
            if missing:
                return EnergySource(
                    reason=f"no GPU energy counter: Zeus sees {len(gpus)} GPU(s), not index {missing[0]}",
                    detail=logged,
                )
            vendor = "amdsmi" if type(gpus).__name__.startswith("AMD") else "nvml"
            counters = {bool(gpus.supports_get_total_energy_consumption(i)) for i in idx}
        except Exception as exc:
            return EnergySource(reason=f"no GPU energy counter: {type(exc).__name__}: {exc}", detail=logged)
        source = vendor if counters == {True} else f"{vendor}-power"
        return EnergySource(source, "device", tuple(f"gpu{i}" for i in idx), gpu_indices=idx, detail=logged)
    if any(d.startswith("cuda") for d in devs):
        raise ValueError(f"find_source: one meter reads CUDA devices or the CPU, not both: {devs}")
    if not any(os.path.exists(d) for d in RAPL_DIRS):
        why = f"RAPL is not exposed here ({RAPL_DIRS[0]} is absent)"
        return EnergySource(reason=f"no CPU energy counter: {why}")
    cpus, why, logged = _cpu_manager()
    if cpus is None:
        return EnergySource(reason=f"no CPU energy counter: {why}", detail=logged)
    n = len(cpus)
    if n == 0:
        return EnergySource(reason="no CPU energy counter: RAPL exposes no package", detail=logged)
    return EnergySource(
        "rapl-package",
        "cpu-package",
        tuple(f"cpu-package{i}" for i in range(n)),
        cpu_indices=tuple(range(n)),
        detail=logged,
    )


def _reset_for_tests() -> None:
    """Forget the cached Zeus managers (tests install fake ones)."""
    _gpu_manager.cache_clear()
    _cpu_manager.cache_clear()


# --- the meter ----------------------------------------------------------------------------------


def _make_monitor(src: EnergySource) -> Any:
    from zeus.monitor import ZeusMonitor

    return ZeusMonitor(gpu_indices=list(src.gpu_indices), cpu_indices=list(src.cpu_indices))


class EnergyMeter:
    """A Zeus measurement window around the timed steps, for the devices one process drives.

    ``with EnergyMeter(["cuda:0"]) as meter: timing = time_step(step, window=meter,
    min_time_s=meter.min_time_s(max_time_s))`` then ``meter.result(steps=..., items_per_step=...)``.
    ``begin`` and ``end`` never raise: a failed read becomes the result's reason. Creating the meter
    opens and closes one window at once, so Zeus's helper processes (RAPL's wrap-around tracker)
    start here, before any timing, and not inside the first timed window.
    """

    def __init__(self, devices: Sequence[str], *, source: EnergySource | None = None) -> None:
        self.src = source if source is not None else find_source(devices)
        self._key = f"dlbench-{os.getpid()}-{id(self)}"
        self._monitor: Any = None
        self._measurement: Any = None
        self._error = ""
        self._open = False
        if self.src.available:
            try:
                with _zeus_log(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    self._monitor = _make_monitor(self.src)
                    self._monitor.begin_window(self._key + "-start", sync_execution=False)
                    self._monitor.end_window(self._key + "-start", sync_execution=False)
            except Exception as exc:
                what = f"{type(exc).__name__}: {exc}"
                self._error = f"energy: Zeus could not read the {self.src.source} counter: {what}"
                self.close()

    @property
    def live(self) -> bool:
        """A counter is there and Zeus opened it."""
        return self._monitor is not None

    @property
    def min_window_s(self) -> float:
        """How long a window must last for a figure (0 without a counter)."""
        return self.src.min_window_s if self.live else 0.0

    def min_time_s(self, max_time_s: float) -> float:
        """The timing pass's ``min_time_s``: sample for the counter's minimum window when the time cap
        allows it; 0 when it does not (the cells then stay empty, and the timing is not held back)."""
        return self.min_window_s if self.min_window_s <= max_time_s else 0.0

    def begin(self) -> None:
        if self._monitor is None:
            return
        try:
            self._monitor.begin_window(self._key, sync_execution=False)
            self._open = True
        except Exception as exc:
            self._error = f"energy: opening the window failed: {type(exc).__name__}: {exc}"

    def end(self) -> None:
        if self._monitor is None or not self._open:
            return
        self._open = False
        try:
            with warnings.catch_warnings():  # Zeus warns about a counter that read zero: our reason says it
                warnings.simplefilter("ignore")
                self._measurement = self._monitor.end_window(self._key, sync_execution=False)
        except Exception as exc:
            self._error = f"energy: closing the window failed: {type(exc).__name__}: {exc}"

    def result(self, *, steps: int, items_per_step: int) -> EnergyResult:
        """The window's figures for ``steps`` steps of ``items_per_step`` items, or why none."""
        src = self.src
        if not src.available:
            return EnergyResult("unavailable", src.reason)
        if self._error or self._measurement is None:
            return EnergyResult(
                "failed",
                self._error or "energy: the window was never closed",
                source=src.source,
                scope=src.scope,
                devices=list(src.devices),
            )
        m = self._measurement
        window = float(m.time)
        readings: list[dict[str, Any]] = []
        if src.gpu_indices:
            for label, i in zip(src.devices, src.gpu_indices, strict=True):
                readings.append(
                    {
                        "device": label,
                        "joules": (m.gpu_energy or {}).get(i),
                        "window_s": window,
                        "steps": steps,
                    }
                )
        else:
            for label, i in zip(src.devices, src.cpu_indices, strict=True):
                reading = {
                    "device": label,
                    "joules": (m.cpu_energy or {}).get(i),
                    "window_s": window,
                    "steps": steps,
                }
                if m.dram_energy and i in m.dram_energy:  # kept aside: the package counter excludes DRAM
                    reading["dram_joules"] = m.dram_energy[i]
                readings.append(reading)
        return EnergyResult.from_readings(
            readings,
            source=src.source,
            scope=src.scope,
            items_per_step=items_per_step,
            min_window=src.min_window_s,
        )

    def close(self) -> None:
        """Stop the helper processes Zeus started for this monitor (RAPL trackers, power pollers)."""
        mon, self._monitor = self._monitor, None
        if mon is None:
            return
        poller = getattr(mon, "power_monitor", None)
        if poller is not None:
            try:
                poller.stop()
            except Exception:
                pass
        for cpu in getattr(getattr(mon, "cpus", None), "cpus", None) or []:
            for f in (getattr(cpu, "rapl_file", None), getattr(cpu, "dram", None)):
                tracker = getattr(f, "_wraparound_tracker", None)
                if tracker is not None:
                    try:
                        tracker._stop()
                    except Exception:
                        pass

    def __enter__(self) -> EnergyMeter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def energy_status(device: str = "cpu") -> dict[str, Any]:
    """``dlbench env``'s energy lines: the source on ``device``, or the reason there is none."""
    src = find_source([device])
    out: dict[str, Any] = {
        "energy_source": src.source or "none",
        "energy_devices": ",".join(src.devices) or None,
        "energy_note": src.describe(),
    }
    return out


def _read_counters_j(src: EnergySource) -> float | None:
    """The sum of the source's cumulative counters now, joules (None where Zeus has no counter)."""
    if src.gpu_indices:
        gpus = _gpu_manager()[0]
        if gpus is None or not all(gpus.supports_get_total_energy_consumption(i) for i in src.gpu_indices):
            return None
        return sum(gpus.get_total_energy_consumption(i) for i in src.gpu_indices) / 1e3
    cpus = _cpu_manager()[0]
    if cpus is None or not src.cpu_indices:
        return None
    return sum(cpus.get_total_energy_consumption(i).cpu_mj for i in src.cpu_indices) / 1e3


def observed_update_period_s(device: str = "cpu", seconds: float = 1.0) -> float | None:
    """The shortest interval between two changes of the counter, read in a tight loop for
    ``seconds`` (the first change is skipped: the loop starts between two updates); None without
    an energy counter or without two changes."""
    src = find_source([device])
    if not src.available or _read_counters_j(src) is None:
        return None
    changes: list[float] = []
    last = _read_counters_j(src)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        value = _read_counters_j(src)
        if value != last:
            changes.append(time.perf_counter())
            last = value
    gaps = [b - a for a, b in zip(changes, changes[1:], strict=False)]
    return min(gaps) if gaps else None


if __name__ == "__main__":  # pragma: no cover - a manual check, used by bench/gpu_check.sh
    import json
    import sys

    dev = sys.argv[1] if len(sys.argv) > 1 else "cpu"
    status = energy_status(dev)
    status["detail"] = list(find_source([dev]).detail)
    if find_source([dev]).available:
        status["observed_update_period_s"] = observed_update_period_s(dev)
    json.dump(status, sys.stdout, indent=2)
    print()
