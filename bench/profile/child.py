"""A profile in a child process, under a timeout: ``python -m bench.profile.child REQUEST.json RESULT.json``.

``dlbench profile`` without ``--parallel`` profiles in a child (as ``dlbench run`` measures), so
``--timeout`` bounds it and a kill of the whole profile is a kill of one process group:

* the parent (``run_child``) writes the request (``ProfilePlan.child_request``) into its owned
  folder, starts the child in a session of its own with the owner's marker, and waits up to
  ``timeout_s``; past it, or on SIGINT/SIGTERM, the child's group is killed (and every marked
  process with the owned entry) -- ``ProfileError("timeout", ...)`` says so;
* the child dies with the parent (``PR_SET_PDEATHSIG``), ignores SIGINT (the parent decides),
  plans the same profile again (``plan_profile``: the same checks), runs it into the request's
  ``out_dir`` (the parent's staging folder), and writes ``ProfileResult.to_dict()`` atomically, or
  ``{"status": "error" | "oom", "reason": ...}``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench.registry import CHILD_ENV_VAR


def run_child(request: dict[str, Any], own: Any, *, timeout_s: float, compile: str = "none") -> Any:
    """Run ``request`` in a child under ``timeout_s``; its ``ProfileResult``, or ``ProfileError``.

    A compiled configuration (``compile``) gets a cold inductor cache in the owned folder, as a run's
    child does (``bench.compiling.inductor_cache_env``)."""
    from bench.compiling import inductor_cache_env
    from bench.profile.scenario import ProfileError
    from bench.profile.trace import ProfileResult

    folder = Path(own.path)
    req, res, log = folder / "profile-request.json", folder / "profile-result.json", folder / "profile.log"
    req.write_text(json.dumps({**request, "parent_pid": os.getpid()}), encoding="utf-8")
    env = {
        **own.child_env(),
        CHILD_ENV_VAR: "1",
        "PYTHONUNBUFFERED": "1",
        **inductor_cache_env(compile, folder),
    }
    t0 = time.monotonic()
    with log.open("wb") as logf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.profile.child", str(req), str(res)],
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            rc = proc.wait(timeout=timeout_s)
        except BaseException as exc:  # the timeout, Ctrl-C, SIGTERM: the child's whole group goes
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.wait()
            if isinstance(exc, subprocess.TimeoutExpired):
                raise ProfileError(
                    "timeout",
                    f"the profile ran past --timeout {timeout_s:g} s and was killed; nothing was written "
                    "(raise --timeout, or record fewer steps)",
                ) from None
            raise
    try:
        data = json.loads(res.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = None
    if rc == 0 and isinstance(data, dict) and data.get("status") == "ok":
        return ProfileResult.from_dict(data["result"])
    if isinstance(data, dict) and data.get("status") in ("error", "oom"):
        raise ProfileError(str(data["status"]), str(data.get("reason", "")))
    tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-2:])
    how = f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit code {rc}"
    raise ProfileError(
        "error", f"the profiling child died ({how}) after {time.monotonic() - t0:.1f} s: {tail}".strip()
    )


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, default=str), encoding="utf-8")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench.profile.child REQUEST.json RESULT.json``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m bench.profile.child REQUEST.json RESULT.json", file=sys.stderr)
        return 2
    request = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    from bench.owned import die_with_parent

    die_with_parent(request.get("parent_pid"))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ[CHILD_ENV_VAR] = "1"
    from bench.profile.scenario import plan_profile
    from bench.run.child import is_oom

    try:
        plan = plan_profile(
            request["scenario"],
            preset=request["preset"],
            mode=request["mode"],
            precision=request["precision"],
            checkpointing=request["checkpointing"],
            compile=request.get("compile", "none"),
            params=request["params"],
            device=request["device"],
            seed=request["seed"],
            channels_last=request["channels_last"],
            out_dir=request["out_dir"],
            isolation=False,
            overwrite=True,  # the parent's own staging folder
            **request["profile_kw"],
        )
        result = plan.profile_here(Path(request["out_dir"]))
    except Exception as exc:
        traceback.print_exc()
        status = "oom" if is_oom(exc) else "error"
        _write(Path(args[1]), {"status": status, "reason": f"{type(exc).__name__}: {exc}"})
        return 1
    _write(Path(args[1]), {"status": "ok", "result": result.to_dict()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
