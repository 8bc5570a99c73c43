"""``python -m bench.cli``: the ``dlbench`` command without an installed entry point (GPU script)."""

from bench.cli import main

main()
