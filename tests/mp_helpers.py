"""What the multiprocessing tests share (test_mp_locks, test_mp_semaphores;
their fixture, ``mp_shared``, is in conftest.py)."""

from __future__ import annotations

import time
from typing import Any


def finish(*procs: Any, timeout: float = 90) -> list[int]:
    """Join every process; kill all that are still running (never leave one
    for multiprocessing's exit handler to join) and say which they were."""
    deadline = time.monotonic() + timeout
    for p in procs:
        p.join(max(0.1, deadline - time.monotonic()))
    stuck = [p.name for p in procs if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(10)
    if stuck:
        raise AssertionError(f"{stuck} did not finish in {timeout}s; exit codes "
                             f"{[(p.name, p.exitcode) for p in procs]}")
    return [p.exitcode for p in procs]
