"""FileLock: an inter-process lock on an OS file lock, owned per thread.

Algorithm. Each ``FileLock`` object has a thread-level inner lock and its own
open file description of ``path``. ``acquire`` first takes the inner lock
through lockwise's thread machinery (so a second thread of the same process
waits, and local cycles mixing ``Lock`` and ``FileLock`` are found as for
any lockwise lock), then ``fcntl.flock(LOCK_EX)`` on the descriptor. The OS
drops the file lock when the process dies, however it dies. Two ``FileLock``
objects on one path exclude each other too, even in one process (``flock``
locks belong to the open file description, not to the process as ``lockf``
locks do).

The OS lock is polled with ``LOCK_NB`` and an exponential backoff from 0.5 ms
to 10 ms (a blocking ``flock`` cannot time out or be re-checked); between
polls, every ``RECHECK`` seconds, the wait is registered in the machine's
shared wait-for store (:mod:`lockwise._shared_store`), atomically with a
cycle check. The waiter that closes a cycle raises :class:`DeadlockError`
naming every participant (host, pid, thread) and lock. The acquire, wait
and confirmation steps are :mod:`lockwise._shared_lock`'s, shared with
RedisLock; this module is their file-and-SQLite backend.

Cost. Uncontended: inner lock, one ``flock`` and one SQLite transaction to
publish the holder (another at release); ``detect=False`` skips the store.
Contended: one poll per backoff step, one store check per ``RECHECK``.

Limits. POSIX only (``fcntl``); on other platforms the constructor raises
``NotImplementedError``. ``flock`` on NFS may be emulated with ``fcntl``
byte-range locks or not work at all: use Redis for locks across machines.
Do not ``fork`` while holding a FileLock: the child shares the parent's
file description (the lock is released when both have released it).
Reentrancy is per thread and per object.

Trust. The lock file's path must be trusted: whoever can write to its
directory can remove or replace the file and so break the exclusion (as with
any lock file). The file is opened with ``O_NOFOLLOW | O_CLOEXEC``, created
with mode 0600: a symlink planted at the path raises OSError instead of
creating or locking the file it points to.
"""

from __future__ import annotations

import _thread
import errno
import os
import sys
import threading
import time

from ._files import NOFOLLOW
from ._findings import printable
from ._primitives import _acquire_site, _drop_held
from ._shared_lock import SharedLock
from ._shared_store import RECHECK, SQLiteStore, report_order, store_for
from ._sites import named_site, site_of, state_name, thread_name
from ._state import ThreadState, _local

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

TYPE_CHECKING = False  # True for type checkers: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Any, Optional

_allocate_lock = _thread.allocate_lock


class FileLock(SharedLock):
    """An inter-process lock on ``path``, with the API of :class:`lockwise.Lock`.

    ``reentrant=True`` lets the owning thread acquire it again (one release
    per acquire). ``name`` is the name in reports (default: the path).
    ``detect=False`` skips the shared wait-for store (no deadlock detection
    or lock-order findings across processes). ``shared_dir`` overrides the
    store directory for this lock.

    Only the owning thread may release it. ``acquire(blocking=True,
    timeout=-1)`` returns True or False as ``threading.Lock.acquire`` does and
    raises :class:`lockwise.DeadlockError` instead of waiting forever.
    """

    _kind = "FileLock"
    _recheck = RECHECK
    _thread_level = True

    def __init__(self, path: Any, reentrant: bool = False, name: Optional[str] = None, *,
                 detect: bool = True, shared_dir: Optional[str] = None) -> None:
        if fcntl is None:  # pragma: no cover
            raise NotImplementedError("lockwise.FileLock needs fcntl.flock (POSIX)")
        self.path = os.path.abspath(os.fspath(path))
        self.reentrant = bool(reentrant)
        frame = sys._getframe(1)
        self._site = site_of(frame) if name is None else named_site(name, frame)
        self._name = name if name is not None else self.path
        self._inner = _allocate_lock()
        self._owner: Optional[ThreadState] = None
        self._inner_owner: Optional[ThreadState] = None
        self._count = 0
        self._acq: Optional[tuple[Any, int]] = None
        self._serial = 0
        self._fd = -1
        self._fd_pid = 0
        self._key = "file:" + self.path
        self._store: Optional[SQLiteStore] = store_for(shared_dir) if detect else None
        self._sent: set[tuple[str, str]] = set()
        self._broken = False

    # ---------------------------------------------------------------- API

    @property
    def name(self) -> str:
        """The name in reports: the one given, else the path."""
        return self._name

    @property
    def count(self) -> int:
        """The owner's recursion count (0 when not held by this process)."""
        return self._count

    __enter__ = SharedLock.acquire

    def release(self) -> None:
        ts: Optional[ThreadState] = getattr(_local, "ts", None)  # not current_state(): see __exit__
        if ts is None or self._owner is not ts:
            raise RuntimeError("cannot release un-acquired lock")
        if self._count > 1:
            self._count -= 1
            return
        self._count = 0
        held = ts.held  # _drop_held inlined: a call's entry is an eval-breaker check
        try:  # and so is a call's return (3.12+): from here on the release completes
            if held and held[-1] is self:
                held.pop()
            elif self in held:
                held.remove(self)
        finally:
            self._owner = None
            try:  # both locks are given back whatever interrupts the bookkeeping
                try:
                    self._store_call("remove_holder", self._key)
                finally:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                self._inner_owner = None
                self._inner.release()

    def _give_back(self, ts: ThreadState, grant: Any) -> None:
        """Forget ``ts`` as the owner and unlock the file, in a finally: the
        holder row goes first, so that no other process sees this one holding
        a lock it may already have taken (a false cycle)."""
        if self._owner is ts:
            self._count = 0
            self._owner = None
        try:
            _drop_held(ts, self)
            self._store_call("remove_holder", self._key)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def __exit__(self, *args: object) -> None:
        # release(), written out: one Python call less (its entry is an
        # eval-breaker check, where an exception would leave the lock held).
        # No current_state() call either, for the same reason: getattr is C.
        ts: Optional[ThreadState] = getattr(_local, "ts", None)
        if ts is None or self._owner is not ts:
            raise RuntimeError("cannot release un-acquired lock")
        if self._count > 1:
            self._count -= 1
            return
        self._count = 0
        held = ts.held  # _drop_held inlined (no call, as in release)
        try:  # a signal handler may raise as held.pop() returns: release anyway
            if held and held[-1] is self:
                held.pop()
            elif self in held:
                held.remove(self)
        finally:
            self._owner = None
            try:
                try:
                    self._store_call("remove_holder", self._key)
                finally:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                self._inner_owner = None
                self._inner.release()

    def locked(self) -> bool:
        """True if any thread of any process holds the lock now."""
        if self._inner.locked():
            return True
        if not self._inner.acquire(False):
            return True
        try:
            fd = self._file()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        finally:
            self._inner.release()

    def holder(self) -> Optional[dict[str, Any]]:
        """Who holds the lock according to the shared store (host, pid, thread,
        site); None when nobody does or the store is not used."""
        result: Optional[dict[str, Any]] = self._store_call("holder", self._key)
        return result

    def __repr__(self) -> str:
        state = "locked" if self._inner.locked() else "unlocked"
        parts = [f"<{state} lockwise.FileLock object at {id(self):#x}",
                 f"{self.name!r} ({self._site})"]
        owner = self._owner
        if owner is not None:
            parts.append(f"owner={state_name(owner)} (ident {owner.ident})")
            if self.reentrant:
                parts.append(f"count={self._count}")
            if self.acquired_at:
                parts.append(f"acquired at {self.acquired_at}")
        return printable(" ".join(parts) + ">")  # names may hold escapes

    def __del__(self) -> None:
        fd = getattr(self, "_fd", -1)
        if fd >= 0 and getattr(self, "_fd_pid", 0) == os.getpid():
            try:
                os.close(fd)
            except OSError:
                pass

    # ---------------------------------------------------------------- internals

    def _file(self) -> int:
        if self._fd < 0 or self._fd_pid != os.getpid():
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | NOFOLLOW, 0o600)
            except OSError as exc:
                if exc.errno != errno.ELOOP:
                    raise
                raise OSError(exc.errno, f"{self.path} is a symbolic link; lockwise.FileLock "
                                         "does not follow one at the lock path") from None
            self._fd_pid = os.getpid()
        return self._fd

    def _try(self, fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        except BaseException:
            # Raised by flock (not locked), or asynchronously as it returned
            # (locked): unlocking is harmless in the first case.
            fcntl.flock(fd, fcntl.LOCK_UN)
            raise

    def _store_call(self, method: str, *args: Any) -> Any:
        store = self._store
        if store is None or self._broken:
            return None
        try:
            return store.call(method, *args)
        except Exception as exc:
            from ._findings import internal_error

            self._broken = True
            internal_error(f"the shared store ({store.path}); detection across processes "
                           f"is off for {self.name}", exc)
            return None

    def _publish(self, frame: Any) -> None:
        acq = _acquire_site(frame)
        where = f"{acq[0].co_filename}:{acq[1]}" if acq else "?"
        self._store_call("add_holder", self._key, self.name, str(self._site), where)

    # ---------------------------------------------------------------- backend

    def _try_take(self, frame: Any, deadline: Optional[float]) -> Optional[bool]:
        fd = self._file()
        locked: list[bool] = []  # stored from C: see SharedLock.acquire
        try:
            locked[:] = map(self._try, (fd,))
            if locked[0]:
                self._publish(frame)  # also drops the wait row
                return True
            return None
        except BaseException:
            if locked and locked[0]:
                fcntl.flock(fd, fcntl.LOCK_UN)
            raise

    def _register_and_check(self, timed: bool, deadline: Optional[float]
                            ) -> Optional[list[dict[str, Any]]]:
        result = self._store_call("wait", self._key, self.name, str(self._site), timed, self)
        return None if result is None else result[0]

    def _unregister(self) -> None:
        self._store_call("end_wait")

    def _pause(self, seconds: float, n: int) -> None:
        time.sleep(min(0.0005 * 2 ** min(n, 5), 0.01, seconds))

    def _checking(self) -> bool:
        store = self._store
        return store is not None and store.off is None

    def _granted(self, grant: Any) -> bool:
        return True

    def _again(self) -> bool:
        return True

    def _same_store(self, other: Any) -> bool:
        return self._store is not None and isinstance(other, FileLock) \
            and other._store is self._store

    def _holds(self, path: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        store = self._store
        assert store is not None
        return store.holds_of([step["who"] for step in path])

    def _store_label(self) -> str:
        assert self._store is not None
        return "sqlite:" + self._store.path

    def _note_order(self, shared: list[Any]) -> Optional[BaseException]:
        new = [h for h in shared if (h._key, self._key) not in self._sent]
        if not new:
            return None
        for h in new:
            self._sent.add((h._key, self._key))
        edges = self._store_call("note_order", [(h._key, h.name, str(h._site)) for h in new],
                                 (self._key, self.name, str(self._site)),
                                 thread_name(threading.get_ident()))
        if not edges:
            return None
        from ._shared_store import order_finding

        assert self._store is not None
        return report_order(order_finding(edges, "sqlite:" + self._store.path))


FileLock.__module__ = "lockwise"
