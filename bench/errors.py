"""The error every entry point turns into exit code 2: bad input, found before any work starts.

Torch-free and presentation-free, so the results, statistics and report layers can raise it too.
"""


class UsageError(ValueError):
    """Bad input (the CLI prints the message, which names the argument, and exits with code 2)."""
