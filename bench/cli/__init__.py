"""The ``dlbench`` command line: a thin Typer layer, each command calling one library function.

One module per group of commands (``run``: list, env, run; ``report``: report, gpu-summary;
``profile``: profile; ``compare``; ``gate``; ``bisect``; ``baseline``: check, update, ratios; ``budget``),
each registering on ``app``. Exit codes: 0 every configuration ok or skipped; 1 some configuration failed
(error, oom, timeout); 2 bad usage (the message names the problem; nothing was run); 130 interrupted
(``gate`` and ``bisect`` say in their own modules what their codes mean).
"""

from __future__ import annotations

import typer

from bench import __version__

app = typer.Typer(
    name="dlbench",
    help=(
        "Benchmark and profile PyTorch training techniques (AMP, activation checkpointing, "
        "DDP/FSDP/pipeline) on Transformer and ResNet blocks. Results are CSV under results/."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"dlbench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """dlbench: honest numbers for PyTorch training techniques on your hardware."""


def usage_error(message: str) -> typer.Exit:
    typer.secho(f"Error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(2)


# the command modules register themselves on ``app``
from bench.cli import baseline as _baseline  # noqa: E402, F401
from bench.cli import bisect as _bisect  # noqa: E402, F401
from bench.cli import budget as _budget  # noqa: E402, F401
from bench.cli import compare as _compare  # noqa: E402, F401
from bench.cli import gate as _gate  # noqa: E402, F401
from bench.cli import profile as _profile  # noqa: E402, F401
from bench.cli import report as _report  # noqa: E402, F401
from bench.cli import run as _run  # noqa: E402, F401


def main() -> None:
    app()


if __name__ == "__main__":
    main()
