"""The errors the entry points turn into exit codes and rows: ``UsageError`` (bad input, exit 2, found
before any work starts) and ``Unsupported`` (a configuration that cannot run, a ``skipped`` row).

Torch-free and presentation-free, so every layer (results, statistics, report, scenarios) can raise them.
"""


class UsageError(ValueError):
    """Bad input (the CLI prints the message, which names the argument, and exits with code 2)."""


class Unsupported(Exception):
    """A configuration that cannot run as asked, found while building it (the row is ``skipped``, with
    this message as its reason): activation checkpointing on a model with no repeated blocks, a
    pipeline over a model that does not trace. Not bad input: the rest of the grid runs."""
