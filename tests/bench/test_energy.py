"""Energy per step and per item (``bench.harness.energy``, ``bench.harness.energy_meter``).

Zeus is replaced at its own device boundary: its GPU and RAPL manager singletons
(``zeus.device.gpu._gpus``, ``zeus.device.cpu._cpus``) become fake counters that advance by known
amounts, and its window clock (``zeus.monitor.energy.time``) a fake clock, while the real
``ZeusMonitor`` opens and closes the windows. dlbench does not integrate power itself anywhere (Zeus
does, for GPUs without an energy counter), so there is no constant-power integration to check here.
The last tests use the real Zeus on this VM, which has no RAPL and no GPU.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bench import results
from bench.harness import energy_meter, timing
from bench.harness.energy import EnergyResult, combine_repeats, merge_ranks, min_window_s
from bench.harness.energy_meter import EnergyMeter, EnergySource, find_source
from bench.run.execute import Outcome
from bench.run.grid import RunConfig
from bench.run.request import RunRequest

ENERGY_COLS = ("energy_j_per_step", "energy_j_per_item", "avg_power_w", "energy_source", "energy_scope",
               "energy_devices", "energy_window_s")  # fmt: skip
LINEAR = RunConfig("_linear", "forward", "fp32", "none", "cpu", (("batch_size", 4), ("in_features", 64),
                   ("out_features", 32)), preset="tiny")  # fmt: skip


def _reading(device: str, joules: float | None, window_s: float, steps: int) -> dict[str, Any]:
    return {"device": device, "joules": joules, "window_s": window_s, "steps": steps}


# --- the figures ----------------------------------------------------------------------------------


def test_figures_are_exact_from_a_window() -> None:
    e = EnergyResult.from_readings(
        [_reading("gpu0", 37.5, 2.5, 10)], source="nvml", scope="device", items_per_step=8, min_window=2.0
    )
    assert e.ok and e.reason == ""
    assert (e.joules, e.energy_j_per_step, e.energy_j_per_item, e.avg_power_w) == (37.5, 3.75, 0.46875, 15.0)
    assert (e.window_s, e.steps, e.devices) == (2.5, 10, ["gpu0"])
    assert EnergyResult.from_dict(json.loads(json.dumps(e.to_dict()))) == e


def test_a_short_window_or_a_still_counter_gives_no_figure_and_the_reason() -> None:
    assert min_window_s("nvml") == pytest.approx(2.0) and min_window_s("rapl-package") == pytest.approx(0.1)
    short = EnergyResult.from_readings(
        [_reading("gpu0", 3.0, 0.5, 10)], source="nvml", scope="device", items_per_step=8, min_window=2.0
    )
    assert short.status == "failed" and short.energy_j_per_step is None and short.avg_power_w is None
    assert "lasted 0.5 s, shorter than the 2 s" in short.reason and "--max-time" in short.reason
    for joules in (0.0, None, -1.0):  # never a 0 (or a negative) where the counter did not count
        still = EnergyResult.from_readings(
            [_reading("cpu-package0", joules, 3.0, 10)], source="rapl-package", scope="cpu-package",
            items_per_step=8, min_window=0.1,
        )  # fmt: skip
        assert still.status == "failed" and still.energy_j_per_step is None
        assert "cpu-package0" in still.reason


def test_job_energy_sums_the_ranks_devices_and_counts_a_shared_package_once() -> None:
    def rank(device: str, joules: float, window: float, items: int = 4) -> EnergyResult:
        return EnergyResult.from_readings(
            [_reading(device, joules, window, 20)], source="nvml", scope="device", items_per_step=items,
            min_window=2.0,
        )  # fmt: skip

    job = merge_ranks(
        [rank("gpu0", 40.0, 2.0), rank("gpu1", 60.0, 2.5)], hosts=["h", "h"], job_items_per_step=8
    )
    assert job.ok and job.devices == ["gpu0", "gpu1"] and job.joules == 100.0
    assert job.energy_j_per_step == pytest.approx(40.0 / 20 + 60.0 / 20)  # 5 J per step of the job
    assert job.energy_j_per_item == pytest.approx(5.0 / 8)  # per item of the global batch
    assert job.avg_power_w == pytest.approx(40.0 / 2.0 + 60.0 / 2.5)  # each device over its own window
    two_hosts = merge_ranks([rank("gpu0", 40.0, 2.0), rank("gpu0", 60.0, 2.0)], hosts=["a", "b"],
                            job_items_per_step=8)  # fmt: skip
    assert two_hosts.devices == ["a/gpu0", "b/gpu0"] and two_hosts.joules == 100.0

    def cpu_rank(joules: float) -> EnergyResult:
        return EnergyResult.from_readings(
            [_reading("cpu-package0", joules, 1.0, 20)], source="rapl-package", scope="cpu-package",
            items_per_step=4, min_window=0.1,
        )  # fmt: skip

    shared = merge_ranks([cpu_rank(30.0), cpu_rank(31.0)], hosts=["h", "h"], job_items_per_step=8)
    assert shared.ok and shared.joules == 30.0 and shared.devices == ["cpu-package0"]  # rank 0's reading
    assert "counted once" in shared.reason and "rank 1" in shared.reason
    none = EnergyResult("unavailable", "no CPU energy counter: x")
    assert merge_ranks([none, none], hosts=["h", "h"], job_items_per_step=8).status == "unavailable"
    mixed = merge_ranks(
        [rank("gpu0", 40.0, 2.0), rank("gpu1", 1.0, 0.5)], hosts=["h", "h"], job_items_per_step=8
    )
    assert (
        mixed.status == "failed" and mixed.reason.startswith("rank 1: ") and mixed.energy_j_per_step is None
    )


def test_repeats_take_the_median_of_their_figures() -> None:
    def rep(joules: float) -> EnergyResult:
        return EnergyResult.from_readings([_reading("gpu0", joules, 2.0, 10)], source="nvml", scope="device",
                                          items_per_step=5, min_window=2.0)  # fmt: skip

    row = combine_repeats([rep(30.0), rep(50.0), rep(40.0)])
    assert row is not None and row.ok
    assert (row.energy_j_per_step, row.energy_j_per_item, row.avg_power_w) == (4.0, 0.8, 20.0)
    failed = combine_repeats([rep(30.0), rep(0.0)])
    assert failed is not None and failed.status == "failed" and failed.reason.startswith("repeat 2/2: ")


def test_rows_get_the_columns_only_from_a_figure_and_the_sidecar_keeps_the_reason() -> None:
    from bench.harness.timing import TimingResult
    from bench.run.measure import Measurement

    t = TimingResult([1.0] * 10, 3, "ci_target", 0.02)
    ok = EnergyResult.from_readings([_reading("gpu0", 37.5, 2.5, 10)], source="nvml", scope="device",
                                    items_per_step=8, min_window=2.0)  # fmt: skip
    cols = results.columns_for(["batch_size", "in_features", "out_features"])
    assert all(c in cols for c in ENERGY_COLS) and cols.index("energy_j_per_step") > cols.index("extra")
    assert (
        results.COLUMN_TYPES["energy_j_per_step"] == "float"
        and results.COLUMN_TYPES["energy_source"] == "str"
    )
    req = RunRequest()
    m = Measurement(timing=t, memory=None, items_per_step=8, unit="tokens", energy=ok)
    m2 = Measurement.from_dict(json.loads(json.dumps(m.to_dict())))  # the child -> parent boundary
    assert m2.energy == ok
    row = results.build_row(LINEAR, Outcome("ok", "", m2), run_id="r", env={}, request=req, columns=cols)
    assert [row[c] for c in ENERGY_COLS] == [3.75, 0.46875, 15.0, "nvml", "device", "gpu0", 2.5]
    assert results.samples_record(row, Outcome("ok", "", m2))["energy"]["readings"][0]["joules"] == 37.5
    for e in (EnergyResult("unavailable", "no CPU energy counter: RAPL is not exposed here"), None):
        m3 = Measurement(timing=t, memory=None, items_per_step=8, unit="tokens", energy=e)
        row = results.build_row(LINEAR, Outcome("ok", "", m3), run_id="r", env={}, request=req, columns=cols)
        assert all(row[c] is None for c in ENERGY_COLS)
        rec = results.samples_record(row, Outcome("ok", "", m3))
        assert (rec.get("energy") or {}).get("reason", "") == (e.reason if e else "")


def _ok(joules: float, device: str = "gpu0", steps: int = 10, items: int = 5) -> EnergyResult:
    return EnergyResult.from_readings([_reading(device, joules, 2.0, steps)], source="nvml", scope="device",
                                      items_per_step=items, min_window=2.0)  # fmt: skip


def test_a_repeated_row_takes_the_median_and_each_repeat_record_keeps_its_own() -> None:
    from bench.harness.timing import TimingResult
    from bench.run.execute import aggregate_repeats
    from bench.run.measure import Measurement

    def rep(k: int, joules: float) -> Outcome:
        t = TimingResult([float(k + 1)] * 10, 3, "ci_target", 0.02)
        return Outcome("ok", "", Measurement(timing=t, memory=None, items_per_step=5, unit="tokens",
                                             energy=_ok(joules)), 1.0)  # fmt: skip

    outs = [rep(k, j) for k, j in enumerate((30.0, 50.0, 40.0))]
    agg = aggregate_repeats(outs, covers="between-process", options=RunRequest(repeat=3))
    e = agg.measurement.energy
    assert e.ok and (e.energy_j_per_step, e.energy_j_per_item, e.avg_power_w) == (4.0, 0.8, 20.0)
    assert [r["energy_j_per_step"] for r in agg.repeats] == [3.0, 5.0, 4.0]


def test_a_parallel_row_sums_its_ranks_energy() -> None:
    from bench.run.launch import merge_ranks as merge_job

    def rank(r: int, joules: float) -> dict[str, Any]:
        return {
            "rank": r, "host": "h", "device": f"cuda:{r}", "threads": 1, "status": "ok", "memory": None,
            "timing": {"samples_ms": [10.0] * 10, "warmup_iters": 1, "stop_reason": "ci_target",
                       "target_rel_ci": 0.5},
            "flops_per_step": 1000, "items_per_step": 4, "unit": "tokens", "extra": {}, "notes": [],
            "comm_bytes_per_step": 0, "bubble_fraction": None, "stage_index": None, "mfu": {},
            "energy": _ok(joules, device=f"gpu{r}", items=4).to_dict(),
        }  # fmt: skip

    cfg = RunConfig("encoder", "train", "fp32", "none", "cuda", (("batch_size", 8),), preset="tiny",
                    parallel="ddp", world_size=2)  # fmt: skip
    m = merge_job(cfg, [rank(0, 30.0), rank(1, 50.0)])
    assert m.energy.ok and m.energy.devices == ["gpu0", "gpu1"]
    assert m.energy.energy_j_per_step == 8.0 and m.energy.energy_j_per_item == 1.0  # 8 J over the batch of 8
    assert m.energy.avg_power_w == 40.0
    cols = results.columns_for(["batch_size"])
    row = results.build_row(cfg, Outcome("ok", "", m), run_id="r", env={}, request=RunRequest(), columns=cols)
    assert (row["energy_j_per_step"], row["energy_devices"]) == (8.0, "gpu0,gpu1")


# --- the timing window ----------------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.t = 0

    def __call__(self) -> int:
        return self.t


class _Window:
    """Records how many step calls had run when the window opened and closed."""

    def __init__(self, calls: list[int]) -> None:
        self.calls = calls
        self.at: list[int] = []

    def begin(self) -> None:
        self.at.append(len(self.calls))

    def end(self) -> None:
        self.at.append(len(self.calls))


def test_time_step_brackets_exactly_the_timed_steps_and_holds_ci_target_for_min_time(monkeypatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(timing, "_now_ns", clock)
    calls: list[int] = []

    def step() -> None:
        calls.append(1)
        clock.t += 10_000_000  # 10 ms, constant: the CI target is met at the 10th sample

    win = _Window(calls)
    r = timing.time_step(step, warmup_iters=3, min_samples=10, max_time_s=5.0, min_time_s=1.0, window=win)
    assert r.stop_reason == "ci_target" and r.elapsed_s >= 1.0  # not at 0.1 s: held for min_time_s
    assert win.at == [3, 3 + r.n]  # opened after the 3 warm-up calls, closed after the last sample
    r0 = timing.time_step(step, warmup_iters=3, min_samples=10, max_time_s=5.0)
    assert r0.n == 10 and r0.stop_reason == "ci_target"  # without a meter nothing changes


def test_time_distributed_brackets_the_timed_steps_and_agrees_on_min_time(monkeypatch) -> None:
    from bench.run import parallel

    agreed: list[list[float]] = []

    def agree(values: list[float], group: Any = None) -> list[float]:
        agreed.append(list(values))
        return list(values)

    monkeypatch.setattr(parallel, "agree_max", agree)
    calls: list[int] = []

    class Step:
        def run(self) -> None:
            calls.append(1)
            time.sleep(0.001)

    win = _Window(calls)
    r = parallel.time_distributed(Step(), device="cpu", warmup_iters=2, min_samples=5, target_rel_ci=1.0,
                                  max_time_s=5.0, min_time_s=0.05, window=win)  # fmt: skip
    assert agreed[0][1] == 0.05  # every rank takes the largest min_time_s
    assert win.at == [2, 2 + r.n] and r.elapsed_s >= 0.05


# --- Zeus at its device boundary ------------------------------------------------------------------


class _Counter:
    """A cumulative energy counter (millijoules) that advances by ``step_mj`` at every read."""

    def __init__(self, start_mj: float, step_mj: float) -> None:
        self.value, self.step_mj, self.reads = start_mj, step_mj, 0

    def read(self) -> float:
        self.value += self.step_mj
        self.reads += 1
        return self.value


class _FakeGPUs:
    """Zeus's GPU manager surface that ZeusMonitor uses: an NVML-like total-energy counter (mJ)."""

    def __init__(self, counter: _Counter) -> None:
        self.counter = counter

    def __len__(self) -> int:
        return 1

    def supports_get_total_energy_consumption(self, index: int) -> bool:
        return True

    def get_total_energy_consumption(self, index: int) -> float:
        return self.counter.read()


class _FakeCPUs:
    """Zeus's RAPL manager surface: one package counter (mJ), as ``CpuDramMeasurement``."""

    def __init__(self, counter: _Counter) -> None:
        self.counter = counter
        self.cpus: list[Any] = []

    def __len__(self) -> int:
        return 1

    def get_total_energy_consumption(self, index: int) -> Any:
        from zeus.device.cpu.common import CpuDramMeasurement

        return CpuDramMeasurement(cpu_mj=self.counter.read())


@pytest.fixture
def zeus_fakes(monkeypatch, tmp_path):
    pytest.importorskip(
        "zeus", reason="needs the energy extra (CI installs it): pip install 'dlbench[energy]'"
    )
    import zeus.device.cpu
    import zeus.device.gpu
    import zeus.monitor.energy

    energy_meter._reset_for_tests()
    monkeypatch.setattr(energy_meter, "RAPL_DIRS", (str(tmp_path),))  # Zeus's "RAPL folder exists"
    fakes: dict[str, Any] = {}

    def install(
        *, gpu: _Counter | None = None, cpu: _Counter | None = None, clock: list[float] | None = None
    ):
        if gpu is not None:
            monkeypatch.setattr(zeus.device.gpu, "_gpus", _FakeGPUs(gpu))
        if cpu is not None:
            monkeypatch.setattr(zeus.device.cpu, "_cpus", _FakeCPUs(cpu))
        if clock is not None:
            ticks = iter(clock)
            monkeypatch.setattr(zeus.monitor.energy, "time", lambda: next(ticks))
        return fakes

    yield install
    energy_meter._reset_for_tests()


def test_zeus_window_on_a_fake_nvml_counter_gives_exact_figures(zeus_fakes) -> None:
    gpu = _Counter(1_000_000.0, 0.0)
    # priming window (begin, end), then the measured window: 2.5 s long
    zeus_fakes(gpu=gpu, clock=[0.0, 0.0, 10.0, 12.5])
    src = find_source(["cuda:0"])
    assert (src.source, src.scope, src.devices, src.min_window_s) == ("nvml", "device", ("gpu0",), 2.0)
    with EnergyMeter(["cuda:0"]) as meter:
        assert meter.live and meter.min_time_s(5.0) == 2.0 and meter.min_time_s(1.0) == 0.0
        meter.begin()
        gpu.step_mj = 37_500.0  # the counter advances 37.5 J between the two reads of the window
        meter.end()
    e = meter.result(steps=10, items_per_step=8)
    assert e.ok and e.source == "nvml" and e.devices == ["gpu0"] and e.window_s == 2.5
    assert (e.joules, e.energy_j_per_step, e.energy_j_per_item, e.avg_power_w) == (37.5, 3.75, 0.46875, 15.0)


def test_zeus_window_too_short_for_nvml_leaves_the_cells_empty_with_the_reason(zeus_fakes) -> None:
    zeus_fakes(gpu=_Counter(0.0, 5_000.0), clock=[0.0, 0.0, 10.0, 10.4])
    with EnergyMeter(["cuda:0"]) as meter:
        meter.begin()
        meter.end()
    e = meter.result(steps=10, items_per_step=8)
    assert e.status == "failed" and e.energy_j_per_step is None and e.avg_power_w is None
    assert "lasted 0.4 s, shorter than the 2 s the nvml counter needs" in e.reason


def test_zeus_windows_nest_a_users_window_around_ours(zeus_fakes) -> None:
    from zeus.monitor import ZeusMonitor

    gpu = _Counter(0.0, 1_000.0)  # +1 J per read
    zeus_fakes(gpu=gpu, clock=[0.0, 1.0, 1.0, 2.0, 6.0, 9.0])
    outer = ZeusMonitor(gpu_indices=[0], cpu_indices=[])
    outer.begin_window("user", sync_execution=False)  # read 1 at t=0
    with EnergyMeter(["cuda:0"]) as meter:  # priming: reads 2, 3 at t=1
        meter.begin()  # read 4 at t=2
        meter.end()  # read 5 at t=6
    mine = meter.result(steps=4, items_per_step=2)
    theirs = outer.end_window("user", sync_execution=False)  # read 6 at t=9
    assert mine.ok and mine.joules == 1.0 and mine.window_s == 4.0 and mine.avg_power_w == 0.25
    assert theirs.gpu_energy[0] == 5.0 and theirs.time == 9.0  # the outer window saw all of it


def test_measure_on_a_fake_rapl_counter_extends_the_window_and_fills_the_row(zeus_fakes) -> None:
    from bench.run.measure import measure

    cpu = _Counter(0.0, 2_000.0)  # +2 J per read: every window sees exactly 2 J
    zeus_fakes(cpu=cpu)
    m = measure(LINEAR, RunRequest(max_time_s=0.5, target_rel_ci=0.5))
    e = m.energy
    steps = m.timing.n * m.timing.calls_per_sample
    assert e is not None and e.ok, e
    assert (e.source, e.scope, e.devices) == ("rapl-package", "cpu-package", ["cpu-package0"])
    assert m.timing.elapsed_s >= min_window_s("rapl-package") and e.window_s >= 0.1  # held for the window
    assert e.steps == steps and e.joules == 2.0
    assert e.energy_j_per_step == 2.0 / steps and e.energy_j_per_item == 2.0 / steps / 4
    assert e.avg_power_w == 2.0 / e.window_s
    cols = results.columns_for(["batch_size", "in_features", "out_features"])
    row = results.build_row(
        LINEAR, Outcome("ok", "", m), run_id="r", env={}, request=RunRequest(), columns=cols
    )
    assert row["energy_j_per_step"] == 2.0 / steps and row["energy_scope"] == "cpu-package"
    # a time cap below RAPL's 0.1 s window: the timing is not held back, the cells stay empty, reason given
    short = measure(LINEAR, RunRequest(max_time_s=0.02, target_rel_ci=0.5))
    assert short.energy is not None and short.energy.status == "failed"
    assert any("raise --max-time to at least 0.1" in n for n in short.notes)
    row = results.build_row(LINEAR, Outcome("ok", "", short), run_id="r", env={}, request=RunRequest(),
                            columns=cols)  # fmt: skip
    assert all(row[c] is None for c in ENERGY_COLS)


# --- without Zeus, and the real Zeus on this VM ---------------------------------------------------


def test_without_zeus_the_meter_is_off_and_says_install_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "zeus", None)  # as if not installed
    for device in ("cpu", "cuda:0"):
        src = find_source([device])
        assert not src.available and "install dlbench[energy]" in src.reason
        meter = EnergyMeter([device])
        meter.begin()
        meter.end()
        assert not meter.live and meter.min_time_s(5.0) == 0.0
        e = meter.result(steps=10, items_per_step=4)
        assert e.status == "unavailable" and "install dlbench[energy]" in e.reason
        assert e.energy_j_per_step is None


def _this_vm_has_no_counter() -> bool:
    import os

    return not any(os.path.exists(d) for d in energy_meter.RAPL_DIRS) and not Path("/dev/nvidiactl").exists()


@pytest.mark.skipif(
    not _this_vm_has_no_counter(), reason="this machine has an energy counter (RAPL or a GPU)"
)
def test_real_zeus_on_this_vm_reports_no_counter_and_rows_stay_empty(tmp_path) -> None:
    pytest.importorskip(
        "zeus", reason="needs the energy extra (CI installs it): pip install 'dlbench[energy]'"
    )
    from typer.testing import CliRunner
    from zeus.device.cpu import get_cpus
    from zeus.device.cpu.common import ZeusCPUInitError
    from zeus.monitor import ZeusMonitor

    from bench.cli import app

    energy_meter._reset_for_tests()
    with pytest.raises(ZeusCPUInitError):  # Zeus itself: no RAPL here
        get_cpus()
    mon = ZeusMonitor()  # every device Zeus can find: none
    assert mon.gpu_indices == [] and mon.cpu_indices == []
    src = find_source(["cpu"])
    assert src == EnergySource(reason=src.reason) and "no CPU energy counter" in src.reason
    runner = CliRunner()
    env = runner.invoke(app, ["env", "--device", "cpu", "--json"])
    assert env.exit_code == 0
    fp = json.loads(env.output)
    assert (
        fp["energy_source"] == "none"
        and "no CPU energy counter: RAPL is not exposed here" in fp["energy_note"]
    )
    out = tmp_path / "a.csv"
    args = [
        "--preset",
        "tiny",
        "--device",
        "cpu",
        "--no-isolation",
        "--max-time",
        "0.05",
        "--target-ci",
        "0.5",
    ]
    r = runner.invoke(app, ["run", "attention", "--amp", *args, "--out", str(out)])
    assert r.exit_code == 0, r.output
    df = results.load_results(out)
    assert "amp-bf16" in set(df["precision"]) and (df["status"] == "ok").all()
    for col in ENERGY_COLS:
        assert df[col].isna().all(), col  # empty, never 0
    assert not df["reason"].fillna("").str.contains("energy").any()  # said once: env and the sidecar
    for rec in results.load_samples(out):
        assert rec["energy"]["status"] == "unavailable"
        assert "no CPU energy counter: RAPL is not exposed here" in rec["energy"]["reason"]


def test_an_isolated_child_carries_the_energy_reason_to_the_sidecar(tmp_path) -> None:
    from bench import api

    out = tmp_path / "b.csv"
    s = api.run("_linear", modes="forward", device="cpu", max_time_s=0.05, out=out, progress=False)
    assert s.exit_code == 0, s.rows
    df = results.load_results(out)
    assert all(
        math.isnan(df[c].iloc[0]) if df[c].dtype.kind == "f" else df[c].isna().iloc[0] for c in ENERGY_COLS
    )
    (rec,) = results.load_samples(out)
    assert rec["energy"]["status"] in ("unavailable", "failed") and rec["energy"]["reason"]
