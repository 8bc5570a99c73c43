"""nox sessions: tests, lint, typecheck, perf (regression gate), gpu (opt-in, needs CUDA).

TORCH_SPEC picks the torch requirement (default torch==2.13.0, the CPU wheel on the CI disk).
"""

import os

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
TORCH = os.environ.get("TORCH_SPEC", "torch==2.13.0")


@nox.session
def tests(session: nox.Session) -> None:
    session.install(TORCH)
    session.install("-e", ".[test]")
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


@nox.session
def gpu(session: nox.Session) -> None:
    """All GPU checks (tests marked gpu + the fixed sweep); needs a CUDA machine."""
    session.run("bash", "bench/gpu_check.sh", external=True)
