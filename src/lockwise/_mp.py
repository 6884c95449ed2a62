"""multiprocessing's Lock and RLock, owned and in the cross-process wait-for graph.

While lockwise is installed (``install()``, ``lockwise run``, ``LOCKWISE=1``,
``pytest --lockwise``), ``multiprocessing.synchronize.Lock`` and ``RLock``
are :class:`MPLock` and :class:`MPRLock`: every context's ``Lock()`` and
``RLock()`` make them, and so do the ``Condition``, ``Event`` and ``Queue``
built on those. Each is a lockwise Lock (RLock) whose raw lock is the
multiprocessing semaphore itself, so inside one process it is what any
lockwise lock is (owner, held list, lock order, local wait-for graph), and
between processes it is the semaphore it always was.

Owner. Each lock has a slot in shared memory (an arena of lockwise's own,
allocated without a lock, not from ``multiprocessing.heap``, whose lock a
fork could meet held; inherited at fork, sent along with the lock to spawn
and forkserver children, exactly where the semaphore can go): the holder's
pid, thread ident and process start time, an acquisition count, and whether
it took the lock in a ``with`` block. The slot is written as the semaphore is taken and cleared
before it is given back; :meth:`MPLock.holder` reads it from any process.

Waits. An acquire that must wait goes the lockwise way (the quiet wait, then
the local wait-for graph, where a holder in this process is the owner). An
untimed wait that lasts also registers in the machine's shared wait-for
store (:mod:`lockwise._shared_store`, the SQLite store of FileLock), after
``RECHECK`` seconds and then with a backoff up to ``MAX_RECHECK``. Holders
are not written to the store as they acquire (a transaction per acquire
would cost 100 times the lock): a waiter publishes the multiprocessing locks
it holds in the same transaction as its wait, and withdraws them with it.
While that wait row stands, its thread is blocked and cannot release them; a
release by any other thread or process withdraws the row first. So the last
participant to register a cycle's wait finds the cycle, atomically, as with
FileLock, and raises :class:`DeadlockError`; a cycle through a local link
(a thread of one process waiting for another) must be seen on two checks.

Precision. A ``multiprocessing.Lock`` may be released by any process. A
cycle is raised only when every Lock on it was taken in a ``with`` block (its
holder's own ``__exit__`` releases it) or is an RLock (only its owner can
release it). A bare ``acquire()`` may be a hand-off to another process: a
cycle through one is not raised (the watchdog shows the hang), and inside
one process a wait on such a lock counts as one that may end.

Dead holder. A waiter reads the slot at each check. A holder process that
has exited (gone, a zombie, or its pid reused: the start time differs) never
releases. For an RLock, or a Lock taken in a ``with`` block, that is a
deadlock: DeadlockError naming the pid. After a bare ``acquire()`` another
process may still release it: a ``deadlock`` finding is recorded (and
logged), not raised.

Cost. Uncontended: the lockwise Lock's path plus one call of the semaphore
(through the C accelerator's ``SemInner`` when built, else a Python one) and
the slot's writes. No store access unless a wait outlasts the quiet wait and
is untimed. See ``benchmarks/bench_mp.py``.

Limits. ``Semaphore`` and ``BoundedSemaphore`` have no owner and stay
multiprocessing's own: waits on them (and so ``Condition.wait`` and
``Event.wait``, which wait on a semaphore) are not edges of the graph, and
count as "blocked outside lockwise". ``Manager().Lock()`` returns a proxy to
a ``threading.Lock`` in the manager's process: covered only when that
process runs under lockwise, as a local lock of that process. Locks made
before ``install()`` stay plain. The lock order between processes is not
recorded (each process's own order is). ``isinstance(lock,
multiprocessing.synchronize.Lock)`` is False for these locks. Linux reads
``/proc`` for zombies and start times; elsewhere only "gone" is seen.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import weakref
from multiprocessing import heap
from multiprocessing import synchronize as _synchronize

from . import _findings, _install, _waitfor
from ._config import settings
from ._errors import DeadlockError
from ._files import pid_alive
from ._primitives import Lock, RLock, _drop_held
from ._shared_lock import confirmed, cycle_of
from ._shared_store import (
    RECHECK,
    deadlock_finding,
    participant,
    raise_deadlock,
    store_for,
    type_of,
)
from ._sites import INTERNAL_FILES, site_of, thread_name
from ._state import ThreadState, _local, current_state
from ._waitfor import ANY_THREAD, release_evidence

TYPE_CHECKING = False  # True for type checkers: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Any, Optional

#: multiprocessing's own classes, whatever the patch did to the module since.
ORIGINAL: dict[str, Any] = {"Lock": _synchronize.Lock, "RLock": _synchronize.RLock}

#: The slot: int64 fields, in this order.
PID, IDENT, GEN, WITH, START = range(5)
_SLOT_BYTES = 8 * 5

#: Longest pause between two store checks of one wait (the backoff's cap).
MAX_RECHECK = 1.0

_get_ident = threading.get_ident
_monotonic = time.monotonic


def _start_time(pid: int) -> int:
    """The start time of process ``pid`` (clock ticks since boot; Linux), or 0."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
        return int(fields[19])
    except (OSError, ValueError, IndexError):
        return 0


_PID = os.getpid()
_START = _start_time(_PID)


def holder_exited(pid: int, start: int) -> bool:
    """Has process ``pid`` (started at ``start``, 0: unknown) exited for good?

    A zombie has (it runs no more code); so has a process whose pid now names
    another process (a different start time). Unknown means alive."""
    if not pid_alive(pid):
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
    except OSError:
        return not pid_alive(pid)  # gone between the two looks, or no /proc
    try:
        if fields[0] in (b"Z", b"X"):
            return True
        return bool(start) and int(fields[19]) != start
    except (ValueError, IndexError):
        return False


#: Bytes of shared memory per arena: 1,638 slots, one file descriptor.
_ARENA_BYTES = 64 * 1024
#: Free slots of the arenas this process made: (arena, offset). Lists, whose
#: append and pop are atomic: allocation takes no lock, so a fork, a finalizer
#: or a signal handler can meet it at any point (multiprocessing.heap's lock
#: would be a fork hazard of lockwise's making).
_free: list[tuple[Any, int]] = []


class _Slot:
    """A lock's slot: ``_SLOT_BYTES`` of an arena (``multiprocessing.heap.Arena``:
    a file in ``/dev/shm``, mapped shared, inherited at fork, and pickled for
    a spawned child as a duplicated descriptor). Freed with the lock in the
    process that made it; a child's copy never frees it."""

    __slots__ = ("_arena", "_offset", "_pid")

    def __init__(self, arena: Any, offset: int, pid: int) -> None:
        self._arena = arena
        self._offset = offset
        self._pid = pid

    def view(self) -> memoryview:
        """The slot as int64 fields (``PID``, ``IDENT``, ...)."""
        start = self._offset
        return memoryview(self._arena.buffer)[start:start + _SLOT_BYTES].cast("q")

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Slot, (self._arena, self._offset, 0))

    def __del__(self) -> None:
        try:
            if self._pid == _PID:  # this process's arena: the offset is free again
                _free.append((self._arena, self._offset))
        except Exception:  # at interpreter shutdown, the module's globals may be gone
            pass


def _new_slot() -> _Slot:
    """A zeroed slot of shared memory (a new arena when none is free)."""
    while True:
        try:
            arena, offset = _free.pop()
        except IndexError:
            # Two threads may both grow the pool: one arena too many, no harm.
            arena = heap.Arena(_ARENA_BYTES)
            _free.extend((arena, offset)
                         for offset in range(_ARENA_BYTES - _SLOT_BYTES, -1, -_SLOT_BYTES))
            continue
        arena.buffer[offset:offset + _SLOT_BYTES] = bytes(_SLOT_BYTES)
        return _Slot(arena, offset, _PID)


def _mark(slot: Any) -> None:
    """Record the calling thread as the holder (the semaphore is taken)."""
    slot[IDENT] = _get_ident()
    slot[WITH] = 0
    slot[START] = _START
    slot[GEN] += 1
    slot[PID] = _PID


class SemInner:
    """The raw lock under an MPLock (pure Python; see ``_speedups.SemInner``).

    ``acquire(blocking=True, timeout=-1)`` and ``release()`` as a
    ``_thread.lock``'s, on the multiprocessing semaphore ``sem``, with the
    owner slot written as it is taken and cleared before it is given back. A
    blocking acquire that does not succeed at once waits in :func:`wait`."""

    __slots__ = ("_sem_acquire", "_sem_release", "_is_zero", "_slot", "_lock", "__weakref__")

    def __init__(self, sem: Any, slot: Any, lock: Any) -> None:
        self._sem_acquire = sem.acquire
        self._sem_release = sem.release
        self._is_zero = sem._is_zero
        self._slot = slot
        self._lock = weakref.ref(lock)

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if self._sem_acquire(False):
            _mark(self._slot)
            _end_stale_ownership(self)
            return True
        if not blocking:
            return False
        return wait(self, timeout)

    def release(self) -> None:
        slot = self._slot
        if slot[PID] != _PID or slot[IDENT] != _get_ident():
            released_by_another(self)
        slot[PID] = 0
        self._sem_release()

    def locked(self) -> bool:
        return bool(self._is_zero())

    def take(self, timeout: Optional[float]) -> bool:
        """Wait for the semaphore (None: forever); mark the slot if taken."""
        got = bool(self._sem_acquire(True, timeout))
        if got:
            _mark(self._slot)
            _end_stale_ownership(self)
        return got


def _drop_stale(lock: Any, before: ThreadState) -> None:
    """``lock`` was just taken, and ``before`` was its owner on record when the
    acquire began: that ownership ended by another process's release (an
    owner of this process releases through lockwise, and would have been
    cleared). Drop its entry, keeping the new one when it is this thread's."""
    held = before.held
    if lock._owner is before:
        if held.count(lock) < 2:
            return
    elif lock not in held:
        return
    try:
        held.remove(lock)
    except ValueError:  # removed meanwhile
        pass


def _end_stale_ownership(inner: Any) -> None:
    """The semaphore was just taken: an owner still on record lost it to a
    release by another process (a hand-off). Its ownership is over, and its
    entry in that thread's held list goes (the C ``take()`` does the same)."""
    lock = inner._lock()
    owner = None if lock is None else lock._owner
    if owner is not None:
        lock._owner = None
        _drop_held(owner, lock)


def released_by_another(inner: Any) -> None:
    """A release by a thread that is not the recorded holder (a hand-off, or
    a holder in another process): withdraw the lock from the store, where its
    holder may have published it while waiting."""
    lock = inner._lock()
    if lock is None:
        return
    try:
        store_for(None).call("drop_lazy_holder", lock._key)
    except Exception as exc:
        _findings.internal_error("withdrawing a released multiprocessing lock", exc)


class _Registration:
    """An untimed wait of one thread, registered in the store (or not yet)."""

    __slots__ = ("lock", "next_check", "interval", "pending", "registered", "reported")

    def __init__(self, lock: Any) -> None:
        self.lock = lock
        self.next_check = _monotonic() + RECHECK
        self.interval = RECHECK
        self.pending: Optional[frozenset[tuple[str, str]]] = None
        self.registered = False
        self.reported: set[tuple[int, int]] = set()


#: thread ident -> its registration, while it waits on an MPLock.
_registrations: dict[int, _Registration] = {}


def wait(inner: Any, timeout: float) -> bool:
    """The blocking part of ``SemInner.acquire``: wait for the semaphore.

    The thread's untimed wait (``_waitfor.block_on`` registered it: it calls
    here in slices) also checks the store, then the slot for a dead holder,
    every ``interval`` seconds; a timed one just waits."""
    t = None if timeout is None or timeout < 0 else float(timeout)
    lock = inner._lock()
    ts = current_state()
    if lock is None or ts.waiting is not lock or ts.wait_timed:
        return bool(inner.take(t))
    ident = _get_ident()
    reg = _registrations.get(ident)
    if reg is None or reg.lock is not lock:
        reg = _registrations[ident] = _Registration(lock)
    deadline = None if t is None else _monotonic() + t
    while True:
        now = _monotonic()
        if now >= reg.next_check:
            _check(reg, ts, sys._getframe(1))
            reg.interval = min(reg.interval * 2, MAX_RECHECK)
            reg.next_check = _monotonic() + reg.interval
            now = _monotonic()
        pause = reg.next_check - now
        if deadline is not None:
            pause = min(pause, deadline - now)
        if inner.take(max(pause, 0.0)):
            end_registration(ident)
            return True
        if deadline is not None and _monotonic() >= deadline:
            return False


def end_registration(ident: int) -> None:
    """Withdraw the thread's wait and published holders from the store."""
    reg = _registrations.pop(ident, None)
    if reg is None or not reg.registered:
        return
    try:
        store_for(None).call("end_wait_holding")
    except Exception as exc:
        _findings.internal_error("ending a multiprocessing lock's wait in the store", exc)


def _published(ts: ThreadState) -> list[tuple[str, str, str, str, int]]:
    """The multiprocessing locks ``ts`` holds, as the store's lazy holders."""
    out = []
    for lock in list(ts.held):
        if getattr(lock, "_cross_process", False) and lock._owner is ts:
            acq = lock._acq
            where = f"{acq[0].co_filename}:{acq[1]}" if acq else "?"
            out.append((lock._key, lock._site.label, str(lock._site), where,
                        release_evidence(lock)))
    return out


def _check(reg: _Registration, ts: ThreadState, frame: Any) -> None:
    """Register the wait (with the held locks) and look for a cycle; then
    look at the holder's process. Raises DeadlockError as the policy says."""
    lock = reg.lock
    store = store_for(None)
    try:
        result = store.call("wait_holding", lock._key, lock._site.label, str(lock._site),
                            _published(ts), lock)
    except Exception as exc:
        _findings.internal_error("registering a multiprocessing lock's wait", exc)
        result = None
    if store.off is None:
        reg.registered = True
    if result is None:
        reg.pending = None
    else:
        path, _links, provable = result
        if provable:
            if confirmed(path, reg.pending):
                finding = deadlock_finding(path, store.holds_of([s["who"] for s in path]),
                                           "sqlite:" + store.path, frame)
                if raise_deadlock(finding):
                    raise DeadlockError(str(finding), finding)
            reg.pending = cycle_of(path)
        else:
            reg.pending = None
    _check_holder(reg, ts, frame)


def _check_holder(reg: _Registration, ts: ThreadState, frame: Any) -> None:
    """The holder recorded in the slot is a process that has exited: see the module."""
    lock = reg.lock
    slot = lock._slot
    pid, gen, start, in_with = slot[PID], slot[GEN], slot[START], slot[WITH]
    if not pid or pid == _PID or (pid, gen) in reg.reported:
        return
    if not holder_exited(pid, start) or slot[PID] != pid or slot[GEN] != gen:
        return
    reg.reported.add((pid, gen))
    provable = release_evidence(lock) != ANY_THREAD or bool(in_with)
    me = participant()
    step = {"who": me, "thread": thread_name(_get_ident()), "kind": "lock", "key": lock._key,
            "name": lock._site.label, "site": str(lock._site),
            "holder": f"process {pid} (exited)", "type": type_of(lock._key)}
    finding = deadlock_finding([step], {}, "slot", frame)
    how = "in a with block" if in_with else ("as an RLock" if provable else "by acquire()")
    finding.summary = (f"{finding.threads[0]} waits for {lock._site.label}, held by process "
                       f"{pid}, which has exited holding it (taken {how})")
    finding.details.update({"rule": "dead holder", "dead_pid": pid, "raised": provable})
    if not provable:
        finding.details["why_not_raised"] = (
            "the lock was taken by a bare acquire(): another process may still release it")
    finding.key = ("deadlock", "dead holder", lock._key, pid, gen, me)
    from ._report import render_deadlock

    finding.text = render_deadlock(finding)
    if provable:
        if raise_deadlock(finding):
            raise DeadlockError(str(finding), finding)
    elif _findings.record(finding):
        policy = settings.on_deadlock
        _findings.apply_policy(finding, "log" if policy == "raise" else policy)


def _accelerated() -> Optional[tuple[Any, Any]]:
    """The C ``SemInner`` and its ``setup_mp`` when the accelerator is in use."""
    from . import _primitives

    if _primitives.IMPLEMENTATION != "c":
        return None
    try:
        from ._speedups import SemInner as CSemInner
        from ._speedups import setup_mp
    except ImportError:  # an accelerator built before SemInner existed
        return None
    return CSemInner, setup_mp


_C = _accelerated()
_Inner: Any = SemInner if _C is None else _C[0]


def _setup_c() -> None:
    if _C is not None:
        _C[1](wait, released_by_another, _PID, _START)


_setup_c()


def _threading_args(block: Any, timeout: Any) -> tuple[bool, float]:
    """multiprocessing's ``acquire(block, timeout)`` as threading's arguments:
    a non-blocking call ignores its timeout, None waits for ever, and a
    negative timeout is 0 (``multiprocessing.synchronize.SemLock``'s rules)."""
    if not block:
        return False, -1
    if timeout is None:
        return True, -1
    return True, min(max(float(timeout), 0.0), threading.TIMEOUT_MAX)


class _Shared:
    """What MPLock and MPRLock add to lockwise's Lock and RLock (``_base``)."""

    __slots__ = ()
    #: Waits on it may be ended by another process (see _waitfor._released_from_outside).
    _cross_process = True
    _base: Any
    _mp_kind: str
    _mp: Any
    _buf: Any
    _slot: Any
    _key: str
    _site: Any
    _owner: Optional[ThreadState]

    def __init__(self, *, ctx: Any = None) -> None:
        # A plain semaphore under both: lockwise's RLock counts the recursion.
        self._setup(ORIGINAL["Lock"](ctx=ctx or _default_context()), _new_slot(),
                    f"mp:{self._mp_kind}:" + os.urandom(8).hex())
        self._init_lock(None)
        self._site = site_of(_site_frame())

    def _setup(self, mp: Any, buf: Any, key: str) -> None:
        self._mp = mp
        self._buf = buf
        self._slot = buf.view()
        self._key = key  # type: ignore[misc]  # a slot of the subclasses
        _all.add(self)

    def _init_lock(self, label: Optional[str]) -> None:
        self._base.__init__(self, label)

    def _new_inner(self) -> Any:
        return _Inner(self._mp._semlock, self._slot, self)

    if _C is None:
        # The C acquire parses multiprocessing's signature itself.
        def acquire(self, block: bool = True, timeout: Optional[float] = None) -> bool:
            """multiprocessing's ``acquire(block=True, timeout=None)``."""
            return bool(self._base.acquire(self, *_threading_args(block, timeout)))

    def _acquire_slow(self, blocking: Any, timeout: Any, *rest: Any) -> bool:
        try:
            # threading's arguments, but for the C acquire's untimed call: it
            # passes multiprocessing's (None) and a timeout of any size.
            if timeout is None or (timeout != -1 and timeout > threading.TIMEOUT_MAX):
                blocking, timeout = _threading_args(blocking, timeout)
            before = self._owner
            got = self._base._acquire_slow(self, blocking, timeout, *rest)
            if got:
                if before is not None:
                    _drop_stale(self, before)
                if len(rest) > 2 and rest[2]:  # taken by __enter__
                    self._slot[WITH] = 1
            return bool(got)
        finally:
            if _registrations:
                end_registration(_get_ident())

    @property
    def _semlock(self) -> Any:
        return _SemView(self)

    def holder(self) -> Optional[dict[str, int]]:
        """The holder as recorded in shared memory: ``{"pid", "thread"}`` (the
        thread's ident in that process), or None when nobody holds it."""
        slot = self._slot
        pid, ident = slot[PID], slot[IDENT]
        return {"pid": pid, "thread": ident} if pid else None

    def __reduce__(self) -> tuple[Any, ...]:
        # The semaphore's own state (its __getstate__ refuses unless spawning a
        # child); not the object, whose class name the patch now gives to ours.
        return (_rebuild, (type(self), self._mp.__getstate__(), self._buf, self._key,
                           self._site.label))

    def __repr__(self) -> str:
        base = super().__repr__()
        who = self.holder()
        if who is None or who["pid"] == _PID:
            return str(base)
        return f"{str(base)[:-1]} held by pid {who['pid']} thread {who['thread']}>"


#: multiprocessing's lock factories (``ctx.Lock()``, the classes' ``__init__``):
#: not where the program made the lock.
_FACTORIES = {os.path.abspath(_synchronize.__file__)}
try:
    from multiprocessing import context as _context

    _FACTORIES.add(os.path.abspath(_context.__file__))
except ImportError:  # pragma: no cover - every supported CPython has it
    pass
_FACTORIES |= {os.path.normcase(f) for f in _FACTORIES}


def _site_frame() -> Any:
    """The frame that asked multiprocessing's factory for the lock: the
    program's line, or a multiprocessing module's own (``SimpleQueue._rlock``
    in ``queues.py``: each of a Pool's locks is a class of its own, as
    ``queue.Queue.mutex`` is for a thread lock)."""
    frame: Any = sys._getframe(2)
    while frame is not None and (frame.f_code.co_filename in _FACTORIES
                                 or frame.f_code.co_filename in INTERNAL_FILES):
        frame = frame.f_back
    return frame


def _rebuild(cls: Any, state: Any, buf: Any, key: str, label: str) -> Any:
    original = ORIGINAL["Lock"]
    mp = original.__new__(original)
    mp.__setstate__(state)
    lock = cls.__new__(cls)
    lock._setup(mp, buf, key)
    lock._init_lock(label)
    return lock


class MPLock(_Shared, Lock):
    """``multiprocessing.Lock`` while lockwise is installed: see the module."""

    __slots__ = ("_mp", "_buf", "_slot", "_key")
    _base = Lock
    _mp_kind = "Lock"

    if _C is None:
        # The C Lock marks the slot itself; the pure one's __enter__ cannot.
        def __enter__(self) -> bool:
            got = Lock.__enter__(self)
            self._slot[WITH] = 1
            return got


class _SemView:
    """What multiprocessing's Condition reads of its lock's ``_semlock``
    (``_is_mine``, ``_count``), from lockwise's own record of the owner (the
    semaphore is taken once per ownership, and by the C accelerator without
    the SemLock object's count); anything else is the semaphore's."""

    __slots__ = ("_lock",)

    def __init__(self, lock: Any) -> None:
        self._lock = lock

    def _is_mine(self) -> bool:
        return self._lock._owner is current_state()

    def _count(self) -> int:
        if not self._is_mine():
            return 0
        return int(getattr(self._lock, "_count", 1))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._lock._mp._semlock, name)


class MPRLock(_Shared, RLock):
    """``multiprocessing.RLock`` while lockwise is installed: see the module."""

    __slots__ = ("_mp", "_buf", "_slot", "_key")
    _base = RLock
    _mp_kind = "RLock"


def _default_context() -> Any:
    import multiprocessing

    return multiprocessing.get_context()


#: Every MPLock and MPRLock of this process (reset in a forked child).
_all: weakref.WeakSet[Any] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """Only the forking thread exists in the child. The locks other threads of
    the parent held are held by those threads, in the parent, which will
    release them: here they have no owner (not "an owner that exited")."""
    global _PID, _START
    _PID = os.getpid()
    _START = _start_time(_PID)
    _free.clear()  # the parent allocates from its arenas: the child makes its own
    _setup_c()
    _registrations.clear()
    mine = getattr(_local, "ts", None)
    for lock in list(_all):
        owner = lock._owner
        if owner is None:
            continue
        # Held by the parent's thread, the forking one too: the semaphore is
        # one, its holder is the parent process (the slot says so), and the
        # child's copy of that thread holds nothing (multiprocessing's own
        # RLock is not the child's either). Left in the held list, a lock the
        # parent keeps (a Pool's _help_stuff_finish never releases one) would
        # order every lock the child takes after it.
        lock._owner = None
        if hasattr(lock, "_count"):
            lock._count = 0
        else:
            lock._set_held_in_with(False)
        if owner is mine and mine is not None:
            try:
                mine.held.remove(lock)
            except ValueError:
                pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def patch(installing: bool) -> None:
    """Make ``multiprocessing.synchronize`` produce these locks (or not)."""
    setattr(_synchronize, "Lock", MPLock if installing else ORIGINAL["Lock"])  # noqa: B010
    setattr(_synchronize, "RLock", MPRLock if installing else ORIGINAL["RLock"])  # noqa: B010


MPLock.__module__ = MPRLock.__module__ = "lockwise._mp"
_waitfor.cross_process_types = (MPLock, MPRLock)

# Imported first to unpickle a lock (a spawned child under lockwise), this
# module made multiprocessing.synchronize's import run the install hook,
# which found it half-initialised and left the patch to here.
if _install.is_installed() and os.environ.get("LOCKWISE_MULTIPROCESSING", "").strip() != "0":
    patch(True)
