"""Import locks in the wait-for relation: "thread X waits for the import of M".

CPython serialises the import of one module with a per-module lock,
``importlib._bootstrap._ModuleLock``, owned by the thread that runs the
module's top level until it finishes. A thread that imports the module
meanwhile waits, in C, on the lock's ``wakeup`` lock. CPython's own check
(``_has_deadlocked``, through ``_blocking_on``) raises its ``_DeadlockError``
for cycles made only of module locks (and ``_lock_unlock_module`` then hands
out the partially initialised module). A cycle that mixes a module lock with a
thread lock or a join is invisible to it: the thread that holds an application
lock and imports M waits forever for the thread that runs M's top level and
waits for that lock.

Under :func:`lockwise.install` (and so ``lockwise run`` and the pytest
plugin), ``_ModuleLock.acquire`` is wrapped: it gives the lock a ``wakeup``
proxy (:class:`_Wakeup`, made once per module lock) and calls CPython's own
``acquire``. CPython's algorithm is unchanged, its own deadlock check
included, which runs first: lockwise sees a wait only once CPython has decided
to block. The proxy's untimed blocking ``acquire`` is that block: it waits
through ``_waitfor.block_on``, registered as waiting on the module lock's
:class:`ImportLock` view, so the wait takes part in both rules of
``_waitfor`` and is checked, reported and raised like a wait on a lock.

The edge: a module lock is released only by its owner (``release()`` of
another thread raises RuntimeError), when the module's import finishes; so
the wait is ended by its owner only (``OWNER_ONLY``, as an RLock). Which
module lock a thread blocks on is read from CPython's ``_blocking_on`` (the
thread's own entry, the innermost acquire in progress), so the proxy keeps no
reference to its module lock (no reference cycle: module locks are freed by
reference counting, and ``_module_locks`` forgets them then).

Cost: the wrapper adds one Python call per module-lock acquire (one or two
per import that is not already complete) and makes one small object per
module lock; the blocking path runs only when an import really waits for
another thread's. Nothing is patched while lockwise is only imported; the
last ``uninstall()`` restores ``_ModuleLock.acquire`` (proxies already made
then wait plainly). Errors of lockwise's own here are reported as internal
errors and the import proceeds as CPython's would; only ``DeadlockError``
reaches the program, by the rules of ``_waitfor``.
"""

from __future__ import annotations

import os
import sys
import threading
import weakref

from ._errors import DeadlockError
from ._findings import internal_error
from ._sites import Site
from ._state import current_state, state_of
from ._waitfor import block_on

TYPE_CHECKING = False  # True for type checkers: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Any, Callable, Optional

    from ._state import ThreadState

_get_ident = threading.get_ident

_bootstrap: Any = sys.modules.get("_frozen_importlib")  # the module the import system runs
if _bootstrap is None:  # pragma: no cover - CPython always has it
    _bootstrap = sys.modules.get("importlib._bootstrap")

_ModuleLock: Any = getattr(_bootstrap, "_ModuleLock", None)
_original_acquire: Optional[Callable[[Any], Any]] = getattr(_ModuleLock, "acquire", None)


def _supported() -> bool:
    """Whether this CPython's module locks are those this module knows
    (3.10-3.15: ``owner``, ``count``, ``wakeup``, and ``_blocking_on``)."""
    if _ModuleLock is None or _original_acquire is None:
        return False
    if not hasattr(getattr(_bootstrap, "_blocking_on", None), "get"):
        return False
    try:
        probe = _ModuleLock("lockwise probe")
    except Exception:
        return False
    return all(hasattr(probe, name) for name in ("owner", "count", "wakeup"))


SUPPORTED = _supported()
#: True while installed; proxies made earlier then wait plainly.
_active = False
#: 3.10 and 3.11 keep one ``_blocking_on`` entry per thread, which a nested
#: module-lock acquire replaces and then deletes: after an import made while
#: this thread waits in :func:`_wait` (lockwise's checks and reports run there
#: and may import a module for the first time), the outer acquire's own entry
#: would be missing (its ``del`` then raises KeyError, and CPython's check of
#: other threads would miss the edge). Those waits are listed here, by thread
#: (``ident -> module lock``), and :func:`_acquire` puts the entry back after a
#: nested acquire. 3.12+ keep a list per thread that nesting leaves intact.
_SINGLE_ENTRY = sys.version_info < (3, 12)
_waiting_entries: dict[int, Any] = {}


class ImportLock:
    """A module lock as the wait-for relation sees it (one per module lock).

    It has what ``_waitfor``, the watchdog and the reports read of a lock:
    ``_owner`` (the ThreadState of the importing thread, while it holds it),
    ``_inner.locked()``, ``_count`` (a recursion count: only the owner
    releases it), ``_site`` and ``_kind`` for its name in reports. It refers
    to its module lock weakly (the lock refers to it).
    """

    __slots__ = ("_ref", "module", "_site", "_serial", "__weakref__")

    _kind = "import lock"
    _acq = None  # where the owner took it: not recorded
    _held_in_with = False

    def __init__(self, modlock: Any) -> None:
        self._ref = weakref.ref(modlock)
        self.module = str(modlock.name)
        filename = getattr(sys.modules.get(self.module), "__file__", None)
        if not isinstance(filename, str):
            filename = f"<module {self.module}>"
        self._site = Site(filename, 1, "<module>", f"import of {self.module}")
        self._serial = 0

    @property
    def _owner(self) -> Optional[ThreadState]:
        lock = self._ref()
        if lock is None:
            return None
        ident = lock.owner
        return None if ident is None else state_of(ident)

    @property
    def _inner(self) -> ImportLock:
        return self

    def locked(self) -> bool:
        lock = self._ref()
        return lock is not None and bool(lock.count)

    @property
    def _count(self) -> int:
        lock = self._ref()
        count = 0 if lock is None else lock.count
        return count if isinstance(count, int) else len(count)

    def __repr__(self) -> str:
        return f"<lockwise import lock of {self.module!r}>"


def view_of(modlock: Any) -> ImportLock:
    """The ImportLock of a module lock, made on first need (kept on the lock)."""
    attrs = modlock.__dict__
    view: Optional[ImportLock] = attrs.get("_lockwise")
    if view is None:
        view = attrs.setdefault("_lockwise", ImportLock(modlock))
    assert view is not None
    return view


def _waited(proxy: _Wakeup) -> Optional[ImportLock]:
    """The module lock the calling thread is acquiring through ``proxy``: the
    innermost entry of its ``_blocking_on`` (a list on 3.12+, one lock before)."""
    entry = _bootstrap._blocking_on.get(_get_ident())
    if not entry:
        return None
    modlock = entry[-1] if isinstance(entry, list) else entry
    if getattr(getattr(modlock, "wakeup", None), "_raw", None) is not proxy._raw:
        return None  # bookkeeping of a re-entrant import (3.10, 3.11): wait plainly
    return view_of(modlock)


class _Wakeup:
    """A module lock's ``wakeup`` lock, whose untimed blocking acquire is a
    registered, checked wait on the module lock (see the module docstring)."""

    __slots__ = ("_raw",)

    def __init__(self, raw: Any) -> None:
        self._raw = raw

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if blocking and timeout == -1 and _active:
            return _wait(self)
        return bool(self._raw.acquire(blocking, timeout))

    def release(self) -> None:
        self._raw.release()

    def locked(self) -> bool:
        return bool(self._raw.locked())

    __enter__ = acquire

    def __exit__(self, *exc_info: object) -> None:
        self._raw.release()


def _wait(proxy: _Wakeup) -> bool:
    raw = proxy._raw
    view: Optional[ImportLock] = None
    try:
        ts = current_state()
        view = _waited(proxy)
    except Exception as exc:
        internal_error("finding the module lock an import waits for", exc)
    if view is None:
        return bool(raw.acquire())
    got: list[Any] = []
    tid = ts.ident
    outer = _waiting_entries.get(tid)
    if _SINGLE_ENTRY:
        _waiting_entries[tid] = _bootstrap._blocking_on.get(tid)
    try:
        return block_on(ts, view, raw, None, True, got)
    except DeadlockError as exc:
        # Start the traceback here: the import's frames, not the detector's.
        raise exc.with_traceback(None) from None
    except BaseException:
        if got and got[-1]:  # taken, then interrupted: give it back as CPython would
            raw.release()
        raise
    finally:
        if _SINGLE_ENTRY:
            if outer is None:
                _waiting_entries.pop(tid, None)
            else:
                _waiting_entries[tid] = outer


def _acquire(self: Any) -> Any:
    try:
        wakeup = self.wakeup
        if wakeup.__class__ is not _Wakeup:
            self.wakeup = _Wakeup(wakeup)
    except Exception as exc:
        internal_error("preparing a module lock", exc)
    if not _waiting_entries:  # always, on 3.12+
        return _original_acquire(self)  # type: ignore[misc]
    outer = _waiting_entries.get(_get_ident())
    try:
        return _original_acquire(self)  # type: ignore[misc]
    finally:
        if outer is not None:  # nested in this thread's import wait (3.10, 3.11)
            _bootstrap._blocking_on[_get_ident()] = outer


if _original_acquire is not None:
    _acquire.__doc__ = _original_acquire.__doc__
    _acquire.__wrapped__ = _original_acquire  # type: ignore[attr-defined]


def install_hook(installing: bool) -> None:
    """Wrap ``_ModuleLock.acquire`` on the first install; restore it on the last uninstall."""
    global _active
    if not SUPPORTED:
        return
    try:
        if installing:
            _active = True
            _ModuleLock.acquire = _acquire
        else:
            if _ModuleLock.__dict__.get("acquire") is _acquire:
                _ModuleLock.acquire = _original_acquire
            _active = False
    except Exception as exc:
        internal_error("patching the import system's module locks", exc)


def _after_fork_in_child() -> None:
    # Only the forking thread exists in the child, and it is not waiting.
    _waiting_entries.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def is_patched() -> bool:
    """Whether module-lock waits are registered now (for tests)."""
    return SUPPORTED and _ModuleLock.__dict__.get("acquire") is _acquire
