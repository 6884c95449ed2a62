"""lockwise: locks that know their owner, and deadlocks reported instead of frozen.

The public API is re-exported here; modules starting with ``_`` are private.

Hot path: ``_primitives`` (Lock, RLock) and ``_state`` (per-thread records).
Graphs: ``_waitfor`` (actual deadlocks) and ``_graph``/``_order`` (lock order).
Findings and reports: ``_findings``, ``_report``, ``_html``. Reach: ``_install``.
Extensions: ``_profile`` (contention profiling, ``lockwise.profile()``).
"""

from __future__ import annotations

from . import _install, _joins  # noqa: F401  (_joins records Thread.join as a wait)
from ._condition import Barrier, BoundedSemaphore, Condition, Event, Semaphore
from ._config import configure
from ._errors import (
    DeadlockError,
    DeadlockWarning,
    HangWarning,
    PotentialDeadlockError,
    PotentialDeadlockWarning,
)
from ._filelock import FileLock
from ._findings import Finding, FrameInfo, LockRef, StackInfo, findings
from ._install import install, installed, is_installed, uninstall
from ._order import declare_order
from ._primitives import Lock, RLock
from ._profile import Profiler, profile
from ._snapshot import Snapshot, held_locks, snapshot
from ._watchdog import Watchdog, watchdog

__version__ = "0.1.0"


def _asyncio_hook(installing: bool) -> None:
    """install()/uninstall() also cover asyncio (imported only then: low import cost)."""
    from . import aio

    aio._patch(installing)


_install.add_install_hook(_asyncio_hook)


def reset() -> None:
    """Forget all findings and the lock-order graph (for tests)."""
    from . import _findings, _order

    _findings.clear()
    _order.reset()


for _obj in (Lock, RLock, FileLock, DeadlockError, DeadlockWarning, HangWarning,
             PotentialDeadlockError, PotentialDeadlockWarning, Finding, Snapshot, Watchdog,
             Profiler):
    _obj.__module__ = "lockwise"

__all__ = [
    "Barrier", "BoundedSemaphore", "Condition", "DeadlockError", "DeadlockWarning", "Event",
    "FileLock", "Finding", "FrameInfo", "HangWarning", "Lock", "LockRef", "PotentialDeadlockError",
    "PotentialDeadlockWarning", "Profiler", "RLock", "Semaphore", "Snapshot", "StackInfo",
    "configure", "declare_order", "findings", "held_locks", "install", "installed",
    "is_installed", "profile", "reset", "snapshot", "uninstall", "watchdog", "Watchdog",
]
