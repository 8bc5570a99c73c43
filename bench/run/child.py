"""The child process that measures one configuration: ``python -m bench.run.child REQUEST.json RESULT.json``.

The runner starts one child per configuration so that a segfault, ``os.abort()``, an OOM kill or a
hang takes down only the child. The child reads the request (configuration and measuring options),
measures, and writes its result as JSON (written to a temporary name, then renamed, so the parent
never reads half a file):

    request: {"config": RunConfig.to_json(), "request": RunRequest.to_dict(), "device_name": ...,
              "task": "time" | "probe"}
    result:  {"status": "ok" | "oom" | "error" | "skipped", "reason": "...", "measurement": ... | null}

The task is ``time`` (the default: ``bench.run.measure.measure``, a ``Measurement``) or ``probe``
(``dlbench budget``: ``bench.budget.probe.probe``, one step and its memory figures, timing nothing).

Python-level failures become a result (``torch.OutOfMemoryError`` or a CPU allocation failure ->
``oom``; ``bench.errors.Unsupported``, a configuration found unable to run while building it ->
``skipped`` with its message; anything else -> ``error`` with the exception, traceback on stderr).
Anything that kills the process (signal, abort) leaves no result file, and the parent reads the exit
status instead.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

from bench.registry import CHILD_ENV_VAR


def _die_with_parent(parent_pid: int | None) -> None:
    """Linux: ask for SIGKILL when the parent dies, so a killed sweep leaves no orphan measuring."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except Exception:
        return
    if parent_pid is not None and os.getppid() != parent_pid:  # the parent died before prctl
        os._exit(1)


def is_oom(exc: BaseException) -> bool:
    """True for ``torch.OutOfMemoryError`` and for CPU allocation failures."""
    import torch

    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        return True
    msg = str(exc)
    return isinstance(exc, RuntimeError) and (
        "out of memory" in msg.lower() or "DefaultCPUAllocator: can't allocate memory" in msg
    )


def run_request(request: dict[str, Any]) -> dict[str, Any]:
    """Run the request's task on its configuration; a Python exception becomes an oom/error/skipped result."""
    from bench.errors import Unsupported
    from bench.run.grid import RunConfig
    from bench.run.measure import measure
    from bench.run.request import RunRequest

    try:
        cfg = RunConfig.from_json(request["config"])
        req = RunRequest.from_dict(request.get("request", {}))
        if request.get("task", "time") == "probe":
            from bench.budget.probe import probe

            return {"status": "ok", "reason": "", "measurement": probe(cfg, req)}
        m = measure(cfg, req, device_name=request.get("device_name"))
    except Unsupported as exc:
        return {"status": "skipped", "reason": str(exc), "measurement": None}
    except Exception as exc:
        traceback.print_exc()
        status = "oom" if is_oom(exc) else "error"
        return {"status": status, "reason": f"{type(exc).__name__}: {exc}", "measurement": None}
    return {"status": "ok", "reason": "; ".join(m.notes), "measurement": m.to_dict()}


def write_result(path: Path | str, result: dict[str, Any]) -> None:
    """Write ``result`` as JSON to ``path`` atomically (temporary name, then rename)."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(result, default=str), encoding="utf-8")
    os.replace(tmp, p)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench.run.child REQUEST.json RESULT.json``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m bench.run.child REQUEST.json RESULT.json", file=sys.stderr)
        return 2
    request = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    os.environ[CHILD_ENV_VAR] = "1"
    _die_with_parent(request.get("parent_pid"))
    write_result(args[1], run_request(request))
    return 0


if __name__ == "__main__":
    sys.exit(main())
