"""The traces ``profile_step`` writes load in TensorBoard's PyTorch profiler plugin (torch-tb-profiler).

Two ranks of the tiny attention scenario are profiled into one logdir; a real ``tensorboard`` is
started on a free loopback port, and the plugin's HTTP API must list one run with both workers and
serve an operator table with matmul-family operators. All traffic goes to 127.0.0.1; every wait is
bounded, and the server's process group is killed in ``finally``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "torch_tb_profiler", reason="torch-tb-profiler (the TensorBoard PyTorch plugin) not installed"
)

pytestmark = pytest.mark.slow

HOST = "127.0.0.1"
API = "/data/plugin/pytorch_profiler"
DEADLINE_S = 60.0
MATMUL_OPS = {"aten::mm", "aten::addmm", "aten::linear", "aten::matmul", "aten::bmm"}
# loopback only: never a proxy from the environment
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _tensorboard_cmd(logdir: Path, port: int) -> list[str]:
    exe = Path(sys.executable).parent / "tensorboard"
    base = [str(exe)] if exe.exists() else [sys.executable, "-m", "tensorboard.main"]
    # --load_fast=false: no Rust data server subprocess (the plugin reads the logdir itself)
    return [*base, "--logdir", str(logdir), "--host", HOST, "--port", str(port), "--load_fast=false"]


def _get(port: int, path: str, **params: str) -> Any:
    url = f"http://{HOST}:{port}{API}/{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with _OPENER.open(url, timeout=5) as resp:
        return json.loads(resp.read().decode())


def _wait_for(port: int, proc: subprocess.Popen[bytes], log: Path, deadline: float, fn: Any) -> Any:
    """Call ``fn()`` until it returns something truthy; fail when the server exits or time runs out."""
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"tensorboard exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            out = fn()
            if out:
                return out
        except (OSError, ValueError) as exc:  # not listening yet, 404 while loading, ...
            last = exc
        time.sleep(0.5)
    tail = log.read_text()[-3000:]
    pytest.fail(f"TensorBoard API not ready within {DEADLINE_S:.0f} s (last error: {last!r}):\n{tail}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate the server's own process group (it started one: start_new_session), then kill it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # plugin loader processes left in the group
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


@pytest.fixture(scope="module")
def logdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bench.profile import profile_step
    from bench.registry import BuildContext, get_scenario
    from bench.workload import make_step

    out = tmp_path_factory.mktemp("tb") / "attention_profile"
    spec = get_scenario("attention")
    for rank in (0, 1):
        w = spec.build(spec.make_config("tiny"), BuildContext(device="cpu", mode="train", seed=0))
        step = make_step(w, mode="train", precision="amp-bf16", checkpointing="none", device="cpu")
        profile_step(
            step, device="cpu", out_dir=out, wait=0, warmup=1, active=2, rank=rank, scenario="attention"
        )
    return out


def test_tensorboard_plugin_serves_operator_table(logdir: Path, tmp_path: Path) -> None:
    port = _free_port()
    log = tmp_path / "tensorboard.log"
    env = {**os.environ, "no_proxy": HOST, "NO_PROXY": HOST}
    with log.open("wb") as log_f:
        proc = subprocess.Popen(
            _tensorboard_cmd(logdir, port),
            stdout=log_f,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + DEADLINE_S

        def loaded_runs() -> list[str]:
            data = _get(port, "runs")
            return [] if data.get("loading") else list(data.get("runs") or [])

        runs = _wait_for(port, proc, log, deadline, loaded_runs)
        assert logdir.name in runs, runs
        run = logdir.name
        views = _get(port, "views", run=run)
        assert "Operator" in views, views
        workers = _wait_for(
            port, proc, log, deadline, lambda: _get(port, "workers", run=run, view="Operator")
        )
        assert {"rank0", "rank1"} <= set(workers), workers  # both ranks' traces in one run
        for worker in ("rank0", "rank1"):
            spans = _get(port, "spans", run=run, worker=worker)
            assert spans, f"no spans for {worker}"
            table = _get(
                port, "operation/table", run=run, worker=worker, span=str(spans[0]), group_by="Operation"
            )
            names = {row["name"] for row in table["data"]}
            assert MATMUL_OPS & names, sorted(names)
            assert {"forward", "backward", "optimizer"}.isdisjoint(names)  # phases are not operators
    finally:
        _stop(proc)
