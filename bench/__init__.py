"""bench: dlbench's scenarios, measuring harness, runner, comparison and reports."""

__version__ = "0.1.0"
