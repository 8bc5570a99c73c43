"""The ``dlbench`` command line: a thin Typer layer, each command calling one library function."""

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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
