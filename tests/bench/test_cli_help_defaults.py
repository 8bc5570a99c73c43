"""Every ``[default: ...]`` written into an option's help reaches ``--help``.

Typer renders help with rich markup, where an unescaped ``[default: x]`` is a markup tag and
vanishes from the output; the help strings escape it as ``\\[default: x]``. This walks every
command of the CLI and checks the rendered help of each still shows the defaults its source gives.
"""

from __future__ import annotations

import re
from typing import Any

import typer.main
from typer.testing import CliRunner

from bench.cli import app


def _commands(cmd: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    out = [(path, cmd)]
    if hasattr(cmd, "commands"):  # a group (typer's own click-style core, click may not be installed)
        for name, sub in cmd.commands.items():
            out.extend(_commands(sub, (*path, name)))
    return out


def test_every_written_default_is_rendered() -> None:
    root = typer.main.get_command(app)
    runner = CliRunner()
    checked = 0
    for path, cmd in _commands(root):
        written = []
        for p in cmd.params:
            for m in re.finditer(r"\[default: ([^\]]+)\]", getattr(p, "help", None) or ""):
                written.append(m.group(1))
        if not written:
            continue
        res = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "400"})
        assert res.exit_code == 0, (path, res.output)
        flat = " ".join(res.output.split())
        for value in written:
            assert f"[default: {' '.join(value.split())}]" in flat, (path, value)
            checked += 1
    assert checked >= 20  # run, compare, profile, gate and baseline all write defaults
