"""multiprocessing's locks and semaphores: owned, and in the cross-process wait-for graph.

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

Semaphores. The program's ``Semaphore`` and ``BoundedSemaphore`` are
:class:`MPSemaphore` and :class:`MPBoundedSemaphore` (subclasses, made by a
``__new__`` set on multiprocessing's class; C accelerator only, as the table
below needs a compare-and-swap on shared memory). A semaphore has no owner,
but its permits have takers: a table in shared memory (``PERMITS``
entries) records the pid and thread of each, and :meth:`_Permits.holders`
reads it from any process. A wait that blocks is registered (snapshots show
it) but takes no part in the deadlock rules: any process may release a
permit. An untimed wait that lasts reports (never raises) when every permit
is held by processes that have exited. The semaphores multiprocessing makes
for itself (a Condition's, an Event's, a Queue's) signal between processes:
they stay its own, and so ``Condition.wait`` and ``Event.wait`` count as
"blocked outside lockwise".

Limits. ``Manager().Lock()`` returns a proxy to
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
from ._sites import INTERNAL_FILES, named_site, site_of, thread_name
from ._state import ThreadState, _local, begin_wait, current_state, end_wait
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


#: Bytes of shared memory per arena: 1,638 lock slots, one file descriptor.
_ARENA_BYTES = 64 * 1024
#: Free slots of the arenas this process made, by slot size: (arena, offset).
#: Lists, whose append and pop are atomic: allocation takes no lock, so a
#: fork, a finalizer or a signal handler can meet it at any point
#: (multiprocessing.heap's lock would be a fork hazard of lockwise's making).
_free: dict[int, list[tuple[Any, int]]] = {}


class _Slot:
    """A lock's slot: ``_SLOT_BYTES`` of an arena (``multiprocessing.heap.Arena``:
    a file in ``/dev/shm``, mapped shared, inherited at fork, and pickled for
    a spawned child as a duplicated descriptor). Freed with the lock in the
    process that made it; a child's copy never frees it."""

    __slots__ = ("_arena", "_offset", "_size", "_pid")

    def __init__(self, arena: Any, offset: int, size: int, pid: int) -> None:
        self._arena = arena
        self._offset = offset
        self._size = size
        self._pid = pid

    def view(self) -> memoryview:
        """The slot as int64 fields (``PID``, ``IDENT``, ...)."""
        start = self._offset
        return memoryview(self._arena.buffer)[start:start + self._size].cast("q")

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Slot, (self._arena, self._offset, self._size, 0))

    def __del__(self) -> None:
        try:
            if self._pid == _PID:  # this process's arena: the offset is free again
                _free[self._size].append((self._arena, self._offset))
        except Exception:  # at interpreter shutdown, the module's globals may be gone
            pass


def _new_slot(size: int = _SLOT_BYTES) -> _Slot:
    """``size`` zeroed bytes of shared memory (a new arena when none is free)."""
    free = _free.get(size)
    if free is None:
        free = _free.setdefault(size, [])
    while True:
        try:
            arena, offset = free.pop()
        except IndexError:
            # Two threads may both grow the pool: one arena too many, no harm.
            arena = heap.Arena(_ARENA_BYTES)
            free.extend((arena, offset)
                        for offset in range(_ARENA_BYTES - _ARENA_BYTES % size - size, -1, -size))
            continue
        arena.buffer[offset:offset + size] = bytes(size)
        return _Slot(arena, offset, size, _PID)


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
    how = "in a with block" if in_with else ("as an RLock" if provable else "by acquire()")
    _report_dead_holders(
        lock, [pid], frame, raised=provable, key=(pid, gen),
        summary=f"held by process {pid}, which has exited holding it (taken {how})",
        why_not=None if provable else
        "the lock was taken by a bare acquire(): another process may still release it")


def _report_dead_holders(lock: Any, pids: list[int], frame: Any, *, raised: bool, key: Any,
                         summary: str, why_not: Optional[str]) -> None:
    """A ``deadlock`` finding for a wait on ``lock`` (a lock or a semaphore of
    this module) whose holders, the processes ``pids``, have exited: raised
    (as the policy says) when ``raised``, else recorded and logged with
    ``why_not``."""
    me = participant()
    holder = (f"process {pids[0]} (exited)" if len(pids) == 1 else
              "processes " + ", ".join(map(str, pids)) + " (exited)")
    step = {"who": me, "thread": thread_name(_get_ident()), "kind": "lock", "key": lock._key,
            "name": lock._site.label, "site": str(lock._site), "holder": holder,
            "type": type_of(lock._key)}
    finding = deadlock_finding([step], {}, "slot", frame)
    finding.summary = f"{finding.threads[0]} waits for {lock._site.label}, {summary}"
    finding.details.update({"rule": "dead holder", "dead_pid": pids[0], "raised": raised})
    if len(pids) > 1:
        finding.details["dead_pids"] = pids
    if why_not is not None:
        finding.details["why_not_raised"] = why_not
    finding.key = ("deadlock", "dead holder", lock._key, key, me)
    from ._report import render_deadlock

    finding.text = render_deadlock(finding)
    if raised:
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


#: A semaphore's permit table (see ``_speedups.claim_permit``): a header of two
#: int64 (ticket counter, permits taken while the table was full), then
#: ``PERMITS`` entries of four (pid, thread ident, ticket, start time).
PERMITS = 16
_TICKET, _OVERFLOW, _HEADER = 0, 1, 2
_TABLE_BYTES = 8 * (_HEADER + 4 * PERMITS)

_MP_DIR = os.path.dirname(os.path.abspath(_synchronize.__file__))


def _made_by_multiprocessing(frame: Any) -> bool:
    """Was the semaphore asked for by multiprocessing's own code (a Condition's,
    an Event's or a Queue's), past the context's factory methods? Those
    signal between processes: a permit is given back by another process than
    the one that took it, and a table of "holders" would only mislead."""
    while frame is not None and (frame.f_code.co_filename in _FACTORIES - _SYNCHRONIZE
                                 or frame.f_code.co_filename in INTERNAL_FILES):
        frame = frame.f_back
    return frame is not None and os.path.dirname(
        os.path.abspath(frame.f_code.co_filename)) == _MP_DIR


_SYNCHRONIZE = {os.path.abspath(_synchronize.__file__),
                os.path.normcase(os.path.abspath(_synchronize.__file__))}


class _Permits:
    """What MPSemaphore and MPBoundedSemaphore add to multiprocessing's own.

    ``acquire(block=True, timeout=None)``, ``release()`` and the context
    manager keep multiprocessing's semantics; a permit taken is entered in
    the semaphore's table in shared memory with the taker's pid and thread,
    and a release clears the releaser's entry (or, when it holds none, the
    oldest: see ``_speedups.claim_permit``). :meth:`holders` reads it from any
    process. A wait that must block is registered with lockwise (snapshots
    and reports show it), and an untimed one that lasts looks at the table:
    when every permit is recorded as held by processes that have exited, a
    ``deadlock`` finding is recorded and logged, never raised (any process
    may release a semaphore). A semaphore has no owner, so its waits take no
    part in the deadlock rules: the thread counts as one that may run.
    """

    _original: Any
    _kind: str
    _semlock: Any
    _table: Any
    _permits: Any
    _key: str
    _initial: int
    _site: Any
    #: No owner: any thread of any process may release a permit.
    _owner = None
    _acq = None
    _serial = 0

    def __init__(self, value: int = 1, *, ctx: Any = None) -> None:
        self._original.__init__(self, value, ctx=ctx or _default_context())
        self._setup_permits(_new_slot(_TABLE_BYTES), f"mp:{self._kind}:" + os.urandom(8).hex(),
                            value)
        self._site = site_of(_site_frame())

    def _setup_permits(self, table: Any, key: str, initial: int) -> None:
        self._table = table
        self._permits = table.view()
        self._key = key
        self._initial = initial

    @property
    def _inner(self) -> Any:
        """What lockwise's snapshot asks of a waited-on lock (``locked()``)."""
        return _NoPermitLeft(self._semlock)

    def _make_methods(self) -> None:
        """multiprocessing's binds the semaphore's own acquire and release to
        the instance; these are the class's methods."""

    def acquire(self, block: bool = True, timeout: Optional[float] = None) -> bool:
        """multiprocessing's ``acquire(block=True, timeout=None)``."""
        if self._semlock.acquire(False):
            try:  # _claim, written out: this is the uncontended path
                _claim_permit(self._permits)
            except Exception as exc:
                _findings.internal_error("recording a semaphore permit's holder", exc)
            return True
        if not block:
            return False
        return self._wait(None if timeout is None else max(float(timeout), 0.0))

    def release(self) -> None:
        """multiprocessing's ``release()`` (ValueError past a BoundedSemaphore's value)."""
        self._semlock.release()
        try:
            _drop_permit(self._permits)
        except Exception as exc:
            _findings.internal_error("clearing a semaphore permit's holder", exc)

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *args: object) -> None:
        self.release()

    def _claim(self) -> None:
        try:
            _claim_permit(self._permits)
        except Exception as exc:
            _findings.internal_error("recording a semaphore permit's holder", exc)

    def _wait(self, timeout: Optional[float]) -> bool:
        sem = self._semlock
        ts = current_state()
        since = _monotonic()
        deadline = None if timeout is None else since + timeout
        interval = RECHECK
        reported: set[Any] = set()
        got: list[Any] = []
        begin_wait(ts, self, timeout is not None, since)
        try:
            while True:
                pause = interval if deadline is None else min(interval, deadline - _monotonic())
                # Stored by C (map): no bytecode runs between the take and the
                # store, so an exception at any later point sees it taken.
                got[:] = map(sem.acquire, _BLOCK, (max(pause, 0.0),))
                if got[0]:
                    break
                if deadline is not None:
                    if _monotonic() >= deadline:
                        return False
                    continue
                try:
                    self._check_holders(reported, sys._getframe(1))
                except Exception as exc:  # lockwise's own error: the wait goes on
                    _findings.internal_error("looking at a semaphore's takers", exc)
                interval = min(interval * 2, MAX_RECHECK)
        except BaseException:
            if got and got[0]:  # taken as the exception came: as if it was not
                sem.release()
            raise
        finally:
            end_wait(ts)
        self._claim()
        return True

    def holders(self) -> list[dict[str, int]]:
        """The recorded holders of its permits, ``{"pid", "thread"}`` each,
        oldest first: the threads (of any process) that took a permit and have
        not given one back. Permits taken while the table was full
        (``PERMITS`` entries) are not listed: see :meth:`unrecorded`."""
        entries = []
        table = self._permits
        for i in range(PERMITS):
            base = _HEADER + 4 * i
            pid = table[base]
            if pid > 0:
                entries.append((table[base + 2], pid, table[base + 1], table[base + 3]))
        entries.sort()
        return [{"pid": pid, "thread": ident} for _ticket, pid, ident, _start in entries]

    def unrecorded(self) -> int:
        """Permits taken while the table was full, not yet given back."""
        return max(int(self._permits[_OVERFLOW]), 0)

    def _check_holders(self, reported: set[Any], frame: Any) -> None:
        """Every permit is held by a process that has exited: report it once.

        Only when the permits recorded as held by them number at least the
        value the semaphore was made with: a semaphore made with 0 (or used
        beyond its initial permits) is a signal, whose takers do not give
        permits back, and whose exited takers block nobody."""
        try:
            if self._semlock._get_value() != 0:
                return
        except NotImplementedError:  # macOS has no sem_getvalue
            return
        table = self._permits
        if table[_OVERFLOW] > 0:
            return
        dead = []
        for i in range(PERMITS):
            base = _HEADER + 4 * i
            pid, ticket, start = table[base], table[base + 2], table[base + 3]
            if pid == -1 or (pid > 0 and (pid == _PID or not holder_exited(pid, start))):
                return  # being written, or held by a process that may release it
            if pid > 0:
                dead.append((ticket, pid))
        if not dead or not 0 < self._initial <= len(dead):
            return
        key = frozenset(dead)
        if key in reported:
            return
        reported.add(key)
        pids = sorted({pid for _ticket, pid in dead})
        n = len(dead)
        _report_dead_holders(
            self, pids, frame, raised=False, key=key,
            summary=(f"whose {'permit is' if n == 1 else f'{n} permits are'} held by "
                     f"{'a process' if len(pids) == 1 else 'processes'} that exited "
                     "without releasing"),
            why_not="a semaphore may be released by any process, and lockwise cannot see "
                    "them all")

    def __reduce__(self) -> tuple[Any, ...]:
        # The semaphore's own state (refused unless spawning a child), as MPLock's.
        return (_rebuild_permits, (type(self), _SEMLOCK_GETSTATE(self), self._table,
                                   self._key, self._initial, self._site.label))

    def __repr__(self) -> str:
        base = str(self._original.__repr__(self))
        who = self.holders()
        if not who:
            return base
        named = ", ".join(f"pid {h['pid']} thread {h['thread']}" for h in who[:3])
        more = f" and {len(who) - 3} more" if len(who) > 3 else ""
        return f"{base[:-1]}, held by {named}{more}>"


class _NoPermitLeft:
    """``locked()``: no permit is left to take (the semaphore's value is 0)."""

    __slots__ = ("_semlock",)

    def __init__(self, semlock: Any) -> None:
        self._semlock = semlock

    def locked(self) -> bool:
        return bool(self._semlock._is_zero())


# Untyped in typeshed for some versions (read through getattr for mypy on each).
_SEMLOCK_GETSTATE: Any = getattr(_synchronize.SemLock, "__getstate__")  # noqa: B009
_SEMLOCK_SETSTATE: Any = getattr(_synchronize.SemLock, "__setstate__")  # noqa: B009


def _rebuild_permits(cls: Any, state: Any, table: Any, key: str, initial: int,
                     label: str) -> Any:
    sem = object.__new__(cls)
    _SEMLOCK_SETSTATE(sem, state)
    sem._setup_permits(table, key, initial)
    sem._site = named_site(label, None)
    return sem


class MPSemaphore(_Permits, _synchronize.Semaphore):
    """``multiprocessing.Semaphore`` while lockwise is installed: see ``_Permits``."""

    _original = _synchronize.Semaphore
    _kind = "Semaphore"


class MPBoundedSemaphore(_Permits, _synchronize.BoundedSemaphore):
    """``multiprocessing.BoundedSemaphore`` while lockwise is installed: see ``_Permits``."""

    _original = _synchronize.BoundedSemaphore
    _kind = "BoundedSemaphore"


def _permit_functions() -> Optional[tuple[Any, Any]]:
    """``_speedups.claim_permit`` and ``drop_permit`` (C only: they need an
    atomic compare-and-swap on shared memory, which Python has not)."""
    if _C is None:
        return None
    try:
        from ._speedups import claim_permit, drop_permit
    except ImportError:  # built before they existed, or by a compiler without __atomic
        return None
    return claim_permit, drop_permit


_PERMIT_FUNCTIONS = _permit_functions()
if _PERMIT_FUNCTIONS is not None:
    _claim_permit, _drop_permit = _PERMIT_FUNCTIONS
#: Whether multiprocessing's Semaphore and BoundedSemaphore are replaced.
SEMAPHORES = _PERMIT_FUNCTIONS is not None
_BLOCK = (True,)


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


def _new_semaphore(cls: Any, *args: Any, **kwargs: Any) -> Any:
    """``multiprocessing.synchronize.Semaphore.__new__`` while installed: the
    program's ``Semaphore(...)`` and ``BoundedSemaphore(...)`` are made as
    MPSemaphore and MPBoundedSemaphore (subclasses: ``__init__`` runs, and
    ``isinstance`` holds). The class itself is not replaced, so the
    semaphores multiprocessing makes for itself, and those made before
    install, stay its own, and pickle by its name."""
    ours = _SEMAPHORE_CLASSES.get(cls)
    if (ours is None or not kwargs or not _semaphores_patched
            or _made_by_multiprocessing(sys._getframe(1))):
        # A subclass, an unpickling (no arguments: every construction passes
        # ctx=), or one of multiprocessing's own: as without lockwise.
        return object.__new__(cls)
    return object.__new__(ours)


_SEMAPHORE_CLASSES: dict[Any, Any] = {_synchronize.Semaphore: MPSemaphore,
                                      _synchronize.BoundedSemaphore: MPBoundedSemaphore}


def patch(installing: bool) -> None:
    """Make ``multiprocessing.synchronize`` produce these locks (or not)."""
    setattr(_synchronize, "Lock", MPLock if installing else ORIGINAL["Lock"])  # noqa: B010
    setattr(_synchronize, "RLock", MPRLock if installing else ORIGINAL["RLock"])  # noqa: B010
    global _semaphores_patched
    if not SEMAPHORES:
        return
    _semaphores_patched = installing
    semaphore: Any = _synchronize.Semaphore
    if installing and "__new__" not in vars(semaphore):
        # Set once and left (off when uninstalled): a class's __new__, once
        # deleted, leaves object.__new__ refusing the constructor's arguments.
        semaphore.__new__ = staticmethod(_new_semaphore)


#: Whether the program's semaphores are made as MPSemaphore (see patch).
_semaphores_patched = False


MPLock.__module__ = MPRLock.__module__ = "lockwise._mp"
MPSemaphore.__module__ = MPBoundedSemaphore.__module__ = "lockwise._mp"
_waitfor.cross_process_types = (MPLock, MPRLock)

# Imported first to unpickle a lock (a spawned child under lockwise), this
# module made multiprocessing.synchronize's import run the install hook,
# which found it half-initialised and left the patch to here.
if _install.is_installed() and os.environ.get("LOCKWISE_MULTIPROCESSING", "").strip() != "0":
    patch(True)
