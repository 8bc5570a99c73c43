"""Launch a test body on several real processes with gloo on loopback (``torch.multiprocessing``, spawn).

``run_distributed(fn, world_size, *args)`` starts ``world_size`` fresh interpreters; each sets
``MASTER_ADDR=127.0.0.1`` and a free port, joins a gloo process group with a timeout, runs
``fn(rank, world_size, *args)`` and destroys the group. An exception in any rank fails the test with
that rank's traceback; a rank still running after ``timeout_s`` is killed (by its own process handle)
and the test fails, so nothing hangs. ``fn`` must be a module-level function (spawn pickles it by name).
"""

from __future__ import annotations

import datetime
import os
import socket
import sys
import time
import traceback
from collections.abc import Callable
from multiprocessing import resource_tracker
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

PG_TIMEOUT = datetime.timedelta(seconds=60)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _entry(rank: int, fn: Callable[..., None], world_size: int, port: int, args: tuple[Any, ...]) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        GLOO_SOCKET_IFNAME="lo",
    )
    torch.set_num_threads(1)  # 2 ranks share 2 cores
    dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=PG_TIMEOUT)
    try:
        fn(rank, world_size, *args)
        dist.barrier()  # no rank tears the group down while a peer still talks to it
    except BaseException:
        # spawn re-raises only the first failure it sees, often a peer's "connection closed": every
        # rank's own traceback goes to stderr, which pytest shows with the failure
        sys.stderr.write(f"--- rank {rank} of {world_size} failed:\n{traceback.format_exc()}")
        sys.stderr.flush()
        raise
    finally:
        dist.destroy_process_group()


def run_distributed(
    fn: Callable[..., None], world_size: int = 2, *args: Any, timeout_s: float = 120.0
) -> None:
    """Run ``fn(rank, world_size, *args)`` on ``world_size`` spawned processes; raise if any fails."""
    ctx = mp.start_processes(
        _entry,
        args=(fn, world_size, free_port(), args),
        nprocs=world_size,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + timeout_s
    try:
        while not ctx.join(timeout=max(0.1, min(1.0, deadline - time.monotonic()))):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{fn.__name__}: ranks still running after {timeout_s:.0f} s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
                p.join(5)
        # spawn started multiprocessing's resource tracker, a child of this process that would outlive
        # the test (and trip the no-leftover-process checks of the tests after it): stop it; the next
        # spawn starts a fresh one
        resource_tracker._resource_tracker._stop()
