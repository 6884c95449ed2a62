"""lockwise: locks that know their owner, and deadlocks reported instead of frozen.

The public API is re-exported here; modules starting with ``_`` are private.

Hot path: ``_primitives`` (Lock, RLock) and ``_state`` (per-thread records).
Graphs: ``_waitfor`` (actual deadlocks) and ``_graph``/``_order`` (lock order).
Findings and reports: ``_findings``, ``_report``, ``_html``. Reach: ``_install``.
Extensions: ``_profile`` (contention profiling, ``lockwise.profile()``).

PYTEST_DONT_REWRITE: ``lockwise run -m pytest`` and ``LOCKWISE=1`` import
lockwise before pytest starts, and pytest would otherwise warn that this
plugin's package is "already imported so cannot be rewritten" (an error in
suites that set ``filterwarnings = error``); lockwise has no asserts to rewrite.
"""

from __future__ import annotations

import importlib
import os
import sys

from . import _fork, _imports, _install, _joins  # noqa: F401  (_joins records Thread.join as a wait; _fork audits os.fork)
from ._condition import Barrier, BoundedSemaphore, Condition, Event, Semaphore
from ._config import configure
from ._errors import (
    DeadlockError,
    DeadlockWarning,
    HangWarning,
    PotentialDeadlockError,
    PotentialDeadlockWarning,
)
from ._findings import Finding, FrameInfo, LockRef, StackInfo, findings, flush
from ._install import install, installed, is_installed, uninstall
from ._order import declare_order
from ._primitives import Lock, RLock
from ._snapshot import Snapshot, held_locks, snapshot
from ._watchdog import Watchdog, watchdog

TYPE_CHECKING = False  # True for type checkers: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Any

    from ._filelock import FileLock
    from ._profile import Profiler, profile

__version__ = "0.1.0"

# Imported on first use: they pull in sqlite3 and the profiler, which a
# program that does not use them should not pay for at start-up.
_LAZY = {"FileLock": "_filelock", "Profiler": "_profile", "profile": "_profile"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lockwise' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def _patch_asyncio(installing: bool) -> None:
    from . import aio

    aio._patch(installing)


def _asyncio_hook(installing: bool) -> None:
    """install()/uninstall() cover asyncio too: at once if it is imported,
    else when the program first imports it (asyncio costs ~50 ms to import)."""
    if not installing:
        _install.cancel_when_imported("asyncio")
        if "lockwise.aio" in sys.modules:
            _patch_asyncio(False)
    elif "asyncio" in sys.modules:
        _patch_asyncio(True)
    else:
        _install.when_imported("asyncio", lambda: _patch_asyncio(_install.is_installed()))


_install.add_install_hook(_asyncio_hook)


def _patch_multiprocessing(installing: bool) -> None:
    module = sys.modules.get("lockwise._mp")
    if module is not None and not hasattr(module, "patch"):
        return  # being imported (e.g. to unpickle a lock): it patches at its end
    from . import _mp

    _mp.patch(installing)


def multiprocessing_wanted() -> bool:
    """Whether install() covers multiprocessing's locks: unless
    ``LOCKWISE_MULTIPROCESSING=0`` (see docs/multiprocessing.md)."""
    return os.environ.get("LOCKWISE_MULTIPROCESSING", "").strip() != "0"


def _multiprocessing_hook(installing: bool) -> None:
    """install()/uninstall() cover multiprocessing's locks and semaphores (``_mp``):
    at once if ``multiprocessing.synchronize`` is imported, else when it is
    (``ctx.Lock()`` imports it on first use). ``LOCKWISE_MULTIPROCESSING=0``
    leaves them multiprocessing's own."""
    name = "multiprocessing.synchronize"
    if not installing:
        _install.cancel_when_imported(name)
        if "lockwise._mp" in sys.modules:
            _patch_multiprocessing(False)
    elif not multiprocessing_wanted():
        return
    elif name in sys.modules:
        _patch_multiprocessing(True)
    else:
        _install.when_imported(name, lambda: _patch_multiprocessing(_install.is_installed()))


_install.add_install_hook(_multiprocessing_hook)
# Module-lock waits (imports) in the wait-for relation while installed.
_install.add_install_hook(_imports.install_hook)


def reset() -> None:
    """Forget all findings and the lock-order graph (for tests)."""
    from . import _findings, _order

    _findings.clear()
    _order.reset()


for _obj in (Lock, RLock, DeadlockError, DeadlockWarning, HangWarning,
             PotentialDeadlockError, PotentialDeadlockWarning, Finding, Snapshot, Watchdog):
    _obj.__module__ = "lockwise"

__all__ = [
    "Barrier", "BoundedSemaphore", "Condition", "DeadlockError", "DeadlockWarning", "Event",
    "FileLock", "Finding", "FrameInfo", "HangWarning", "Lock", "LockRef", "PotentialDeadlockError",
    "PotentialDeadlockWarning", "Profiler", "RLock", "Semaphore", "Snapshot", "StackInfo",
    "configure", "declare_order", "findings", "flush", "held_locks", "install", "installed",
    "is_installed", "profile", "reset", "snapshot", "uninstall", "watchdog", "Watchdog",
]
