"""nox sessions: tests, lint, typecheck, perf (regression gate), gpu (opt-in, needs CUDA).

TORCH_SPEC picks the torch requirement (default torch==2.13.0, the CPU wheel on the CI disk).
``perf`` runs in the environment nox itself runs in (no virtualenv, nothing installed), so CI
(``.ci/run``) runs it right after the test suite without installing torch a second time.
"""

import os
import signal
import sys

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
TORCH = os.environ.get("TORCH_SPEC", "torch==2.13.0")


@nox.session
def tests(session: nox.Session) -> None:
    session.install(TORCH)
    session.install("-e", ".[test,timm,hf,energy]")  # the energy tests use the real Zeus
    session.run("pytest", "-q", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    session.run("ruff", "check", "dlcore", "bench", "tests", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install(TORCH)
    session.install("-e", ".[dev]")
    session.run("mypy")


def _forward_sigterm() -> None:
    """SIGTERM to nox (what a cancelled CI job sends) goes on to the command it runs.

    nox stops its command only on KeyboardInterrupt, and then first waits ``interrupt_timeout``
    for it to exit by itself: the handler sends SIGTERM to nox's children (the running dlbench
    command, which cleans up its workers and folders and exits) and raises KeyboardInterrupt, so
    nox waits for that cleanup instead of leaving ``baseline ratios`` and its workers running.
    """

    def handler(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: a second SIGTERM cannot cut it short
        try:
            import psutil

            for child in psutil.Process().children():
                child.send_signal(signal.SIGTERM)
        except Exception:
            pass
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


@nox.session(venv_backend="none")
def perf(session: nox.Session) -> None:
    """The regression gate: exact FLOPs/bytes (baseline.json), then interleaved timing ratios (perf.json).

    Needs dlbench installed where nox runs (``pip install -e .[test]``). Posargs go to
    ``dlbench baseline ratios`` (e.g. ``nox -s perf -- --check attention``). After an intended
    change: ``dlbench baseline update`` (figures) or ``dlbench baseline update --ratios`` (timing).
    SIGTERM (a cancelled CI job) reaches the running command, which stops its workers and exits.
    """
    _forward_sigterm()
    dlbench = [sys.executable, "-m", "bench.cli", "baseline"]  # nox's interpreter: the current environment
    wait = {"interrupt_timeout": 60.0, "terminate_timeout": 30.0}  # let dlbench finish its cleanup
    session.run(*dlbench, "check", **wait)
    session.run(*dlbench, "ratios", *session.posargs, **wait)


@nox.session
def gpu(session: nox.Session) -> None:
    """All GPU checks (tests marked gpu + the fixed sweep); needs a CUDA machine."""
    session.run("bash", "bench/gpu_check.sh", external=True)
