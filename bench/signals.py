"""SIGINT and SIGTERM as one interruption, and cleanup that a second signal cannot cut short.

A cancelled CI job sends SIGTERM; a person presses Ctrl-C (SIGINT). Both must stop a command the
same way: its worker processes killed, its temporary folders removed, its partial outputs removed,
then exit ``128 + signal`` (130 for SIGINT, 143 for SIGTERM). Python turns only SIGINT into an
exception by default, and any signal that arrives while ``finally`` blocks run raises a second
``KeyboardInterrupt`` in the middle of the cleanup itself, which then leaves a folder or a process
behind. So, inside ``interrupts()``:

* the first SIGINT or SIGTERM raises ``Interrupted`` (a ``KeyboardInterrupt``, so existing
  ``except KeyboardInterrupt`` clauses and ``with`` blocks unwind as for Ctrl-C);
* every later one is recorded and ignored: the cleanup that the first one started runs to its end;
* inside ``shielded()`` (a cleanup step run on the normal path too) a first signal is held back and
  raised when the shielded block ends, so a cleanup is never cut in half.

Outside the main thread signal handlers cannot be installed; ``interrupts()`` then changes nothing.
Torch-free, standard library only.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

HANDLED = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The command was interrupted by ``signum`` (SIGINT or SIGTERM)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        """``128 + signal``: 130 for SIGINT, 143 for SIGTERM (what a shell reports)."""
        return 128 + self.signum


class _State:
    def __init__(self) -> None:
        self.depth = 0  # nesting of interrupts()
        self.shield = 0  # nesting of shielded()
        self.first: int | None = None  # the signal that started the interruption
        self.pending: int | None = None  # a signal held back by shielded()
        self.ignored: list[int] = []  # signals that arrived after the first (recorded only)


_state = _State()


def interrupted() -> int | None:
    """The signal that interrupted the current command, or None (cleanup code may hurry then)."""
    return _state.first if _state.first is not None else _state.pending


def exit_code(exc: BaseException) -> int:
    """The exit status for an interruption: ``128 + signal`` (130 for a plain ``KeyboardInterrupt``)."""
    return exc.exit_code if isinstance(exc, Interrupted) else 128 + int(signal.SIGINT)


def _handler(signum: int, frame: FrameType | None) -> None:
    if _state.first is not None:
        _state.ignored.append(signum)  # a second signal: the cleanup goes on
        return
    if _state.shield > 0:
        if _state.pending is None:
            _state.pending = signum
        else:
            _state.ignored.append(signum)
        return
    _state.first = signum
    raise Interrupted(signum)


@contextmanager
def interrupts(*, ignore_after: bool = False) -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM interrupt once (``Interrupted``) and are ignored after.

    ``ignore_after`` (a command about to exit): once interrupted, the signals stay ignored after the
    block too, so a second signal between the cleanup and the exit cannot turn the exit status
    ``128 + signal`` into a death by that signal.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, Any] = {}
    if _state.depth == 0:
        _state.first, _state.pending, _state.ignored = None, None, []
        for sig in HANDLED:
            previous[sig] = signal.signal(sig, _handler)
    _state.depth += 1
    try:
        yield
    finally:
        _state.depth -= 1
        if _state.depth == 0:
            keep = ignore_after and (_state.first is not None or _state.pending is not None)
            for signum, old in previous.items():
                signal.signal(signum, signal.SIG_IGN if keep else old)


@contextmanager
def shielded() -> Iterator[None]:
    """A cleanup step that a signal cannot cut in half: a first signal is raised when it ends."""
    _state.shield += 1
    try:
        yield
    except BaseException:
        _state.shield -= 1
        raise
    _state.shield -= 1
    if _state.shield == 0 and _state.pending is not None and _state.first is None and _state.depth > 0:
        _state.first, _state.pending = _state.pending, None
        raise Interrupted(_state.first)


def shield(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` wrapped to run inside ``shielded()`` (for ``ExitStack.callback``)."""

    def run(*args: Any, **kwargs: Any) -> Any:
        with shielded():
            return fn(*args, **kwargs)

    return run


__all__ = ["HANDLED", "Interrupted", "exit_code", "interrupted", "interrupts", "shield", "shielded"]
