"""nox sessions: tests, lint, typecheck, perf (regression gate), gpu (opt-in, needs CUDA).

TORCH_SPEC picks the torch requirement (default torch==2.13.0, the CPU wheel on the CI disk).
``perf`` runs in the environment nox itself runs in (no virtualenv, nothing installed), so CI
(``.ci/run``) runs it right after the test suite without installing torch a second time.
"""

import os
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
    session.run("ruff", "check", "dlcore", "bench", "tests", "examples", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install(TORCH)
    session.install("-e", ".[dev]")
    session.run("mypy")


@nox.session(venv_backend="none")
def perf(session: nox.Session) -> None:
    """The regression gate: exact FLOPs/bytes (baseline.json), then interleaved timing ratios (perf.json).

    Needs dlbench installed where nox runs (``pip install -e .[test]``). Posargs go to
    ``dlbench baseline ratios`` (e.g. ``nox -s perf -- --check attention``). After an intended
    change: ``dlbench baseline update`` (figures) or ``dlbench baseline update --ratios`` (timing).
    """
    dlbench = [sys.executable, "-m", "bench.cli", "baseline"]  # nox's interpreter: the current environment
    session.run(*dlbench, "check")
    session.run(*dlbench, "ratios", *session.posargs)


@nox.session
def gpu(session: nox.Session) -> None:
    """All GPU checks (tests marked gpu + the fixed sweep); needs a CUDA machine."""
    session.run("bash", "bench/gpu_check.sh", external=True)
