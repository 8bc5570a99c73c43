"""The noise sentinel (``bench.harness.noise``): /proc readings, the busy flag, and a missing /proc."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from bench.harness import noise
from bench.harness.noise import CpuTicks, NoiseMonitor, figures, read_ticks


def _fake_proc(root, *, cpu: str, own: str) -> None:
    (root / "self").mkdir(parents=True, exist_ok=True)
    (root / "stat").write_text(f"{cpu}\ncpu0 1 2 3 4\nintr 5\n")
    (root / "self" / "stat").write_text(own)


def _own_line(utime: int, stime: int, cutime: int = 0, cstime: int = 0) -> str:
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime
    # cstime ...
    return f"4242 (my (odd) proc) R 1 1 1 0 -1 0 10 0 0 0 {utime} {stime} {cutime} {cstime} 20 0 1 0 5\n"


def test_read_ticks_parses_stat_and_an_odd_comm(tmp_path):
    _fake_proc(tmp_path, cpu="cpu  100 5 30 800 10 2 3 7 40 0", own=_own_line(20, 5, 3, 1))
    t = read_ticks(tmp_path)
    assert t == CpuTicks(busy=100 + 5 + 30 + 2 + 3, idle=800 + 10, steal=7, own=20 + 5 + 3 + 1)
    assert t.capacity == 140 + 810 + 7


def test_figures_other_cpu_and_steal():
    before = CpuTicks(busy=1000, idle=5000, steal=10, own=100)
    # 200 ticks of capacity: 120 busy, of which 40 ours -> others 80 (40 %); steal 10 (5 %)
    after = CpuTicks(busy=1120, idle=5070, steal=20, own=140)
    fig = figures(before, after)
    assert fig.window_ticks == 200
    assert fig.other_cpu_pct == pytest.approx(40.0) and fig.steal_pct == pytest.approx(5.0)
    assert fig.busy and "other processes used 40%" in fig.reason() and "threshold 25%" in fig.reason()
    quiet = figures(before, CpuTicks(busy=1050, idle=5150, steal=10, own=145))
    assert quiet.other_cpu_pct == pytest.approx(2.5) and not quiet.busy and quiet.reason() == ""
    # our own accounting a tick ahead of the machine's: clamped at 0, never negative
    assert figures(before, CpuTicks(busy=1030, idle=5170, steal=10, own=140)).other_cpu_pct == 0.0
    # too short a window to tell, or a reading missing: None, not busy
    short = figures(before, CpuTicks(busy=1005, idle=5005, steal=10, own=104))
    assert short.other_cpu_pct is None and short.steal_pct is None and not short.busy
    assert figures(None, after).other_cpu_pct is None and figures(before, None).steal_pct is None


def test_missing_proc_gives_none_and_a_quiet_measurement_does_not_crash(tmp_path, monkeypatch):
    missing = tmp_path / "no-proc-here"
    assert read_ticks(missing) is None
    with NoiseMonitor(missing) as mon:
        pass
    assert mon.figures.other_cpu_pct is None and not mon.figures.busy
    # a whole in-process measurement with /proc "missing": figures None, no flag, row cells empty
    monkeypatch.setattr(noise, "PROC_ROOT", str(missing))
    from bench import results
    from bench.run.execute import Outcome
    from bench.run.grid import RunConfig
    from bench.run.measure import measure
    from bench.run.request import RunRequest

    cfg = RunConfig("_linear", "forward", "fp32", "none", "cpu", (("batch_size", 4), ("in_features", 64),
                    ("out_features", 32)), preset="tiny")  # fmt: skip
    req = RunRequest(max_time_s=0.05, target_rel_ci=0.5)
    m = measure(cfg, req)
    assert m.noise_other_cpu_pct is None and m.noise_steal_pct is None and not m.machine_busy
    assert not any("machine busy" in n for n in m.notes)
    row = results.build_row(
        cfg,
        Outcome("ok", "", m),
        run_id="r",
        env={},
        request=req,
        columns=results.columns_for(["batch_size"]),
    )
    assert row["noise_other_cpu_pct"] is None and row["ci_covers"] == "within-process" and row["repeats"] == 1


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="needs Linux /proc")
def test_a_real_busy_process_flags_the_row_noisy():
    from bench import results
    from bench.run.execute import Outcome
    from bench.run.grid import RunConfig
    from bench.run.measure import measure
    from bench.run.request import RunRequest

    # busy loops on about half the cores: ~50 % of the machine's capacity, twice the threshold
    n_busy = max(1, min(8, (os.cpu_count() or 2) // 2))
    hogs = [
        subprocess.Popen(
            [sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 30: pass"]
        )
        for _ in range(n_busy)
    ]
    try:
        time.sleep(0.3)  # let them start spinning
        cfg = RunConfig("_linear", "forward", "fp32", "none", "cpu", (("batch_size", 4), ("in_features", 64),
                        ("out_features", 32)), preset="tiny")  # fmt: skip
        # a timing window of about a second: min_samples out of reach, stopped by the time cap
        req = RunRequest(max_time_s=1.0, target_rel_ci=1e-6, min_samples=10_000_000, max_samples=10_000_000)
        m = measure(cfg, req)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    assert m.noise_other_cpu_pct is not None and m.noise_other_cpu_pct > noise.NOISY_OTHER_CPU_PCT
    assert m.machine_busy
    assert any(n.startswith("noisy: machine busy: other processes used") for n in m.notes)
    row = results.build_row(
        cfg, Outcome("ok", "; ".join(m.notes), m), run_id="r", env={}, request=req,
        columns=results.columns_for(["batch_size", "in_features", "out_features"]),
    )  # fmt: skip
    assert row["noisy"] is True and "machine busy" in row["reason"]
    assert row["noise_other_cpu_pct"] == m.noise_other_cpu_pct
