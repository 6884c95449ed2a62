"""Actual deadlocks: the wait-for relation, checked whenever a thread blocks.

Two rules decide that a wait can never end:

1. **Ownership cycle.** Follow "waits for the owner of" from the blocking
   thread, through joins to the joined thread and through locks to their
   owners, but only through a lock that nobody but its owner will release:
   an RLock (only its owner can), a module's import lock (held by the thread
   running the module's top level until it finishes; see ``_imports``), or a
   Lock its owner took in a ``with`` block (its own ``__exit__`` releases
   it). A Lock taken by a bare ``acquire()`` may be a hand-off that another
   thread releases, so a path through it proves nothing. Returning to the
   start is a deadlock, and so is a wait for such a lock held by the waiter
   itself. A wait on an RLock whose owner has exited is a deadlock too.
   Cost: one step per thread on the path.
2. **Nobody left to run.** Every live thread is blocked, without a timeout,
   on something lockwise sees (a lock, a Condition, hence Event, Semaphore,
   Barrier and queue, or a join), no Python signal handler is installed that
   could still run and wake one (see ``signal_may_wake``), and the process
   runs no thread that Python does not know (a native thread of a C library
   may call back and release something; on Linux ``/proc/self/task`` is
   counted). Then nothing can release anything: the per-process form of
   Go's "all goroutines are asleep". It must hold on two scans
   ``confirm_delay`` apart, with no thread having changed its wait in
   between (``ThreadState.changes``), so transient states and threads that
   are still starting are never mistaken for a freeze. Cost: O(threads),
   paid only when the number of blocked threads reaches the thread count.

Both rules validate every wait they rely on against the resource itself (the
lock is locked and has a recorded owner; the condition waiter was not
notified; the joined thread is alive), following the protocol described in
``_state``.

Who checks when. A thread that must wait first waits ``QUIET_WAIT_US``
(1 ms) unregistered, as threading would (most waits end by then; the C
accelerator spends it without running any Python), then registers its wait
and checks. Every wait that closes a cycle (or blocks the last runnable
thread) is registered last, so its own check sees all the others: the
deadlock is found as it forms, by the thread that formed it, 1 ms late at
most. A check that saw the graph change under it (two reads of the path
differ) is inconclusive and is repeated after ``_RECHECK``; a stall seen
once is confirmed after ``confirm_delay``. Otherwise a blocked thread sleeps
between checks: that catches what forms without a new wait (an owner that
exits holding the lock, a victim chosen by another thread's stall check).
The sleep starts at ``check_interval`` and doubles after every settled check
up to ``_MAX_IDLE``; with n threads blocked, it is at least ``check_interval
* n / _SPREAD``, so all blocked threads together wake about ``_SPREAD /
check_interval`` times a second, however many they are (each wake-up costs a
GIL hand-off). Since wakes of many threads are spread in time, the first of
them sees a change much sooner than one thread's sleep. A periodic check
costs O(1): the stall scan, O(threads), runs again only when some thread
changed its wait since a scan found a thread able to run (``_state.epoch``),
or ``_RESCAN`` later (for what lockwise cannot see change: a signal handler
removed, a native thread ended).

Precision first: a rule raises only when the freeze is provable from what
lockwise sees. Where a wake-up could come from outside its view, nothing is
raised and the watchdog reports the hang: a thread blocked outside lockwise
(sockets, sleep, C-level queues, locks created before ``install()``) counts
as able to run; while a Python signal handler is installed (other than
Ctrl-C's default one and pytest-timeout's, which only fails a test) or a
native thread runs, rule 2 stays silent. Rule 1 does not depend on them: an
ownership cycle is a freeze that no handler or other thread can end.
"""

from __future__ import annotations

import os
import sys
import threading
import time

from . import _findings, _fork
from ._config import settings
from ._describe import acquired_at, acquired_from, lock_refs, name_of
from ._errors import DeadlockError
from ._findings import Finding, StackInfo
from ._sites import raised_outside, user_stack
from ._state import (
    ThreadState,
    begin_wait,
    blocked,
    end_wait,
    epoch,
    internal_threads,
    next_epoch,
    state_of,
    states,
    threads_registered,
    threads_starting,
)

TYPE_CHECKING = False  # True for type checkers: typing is not imported at run time
if TYPE_CHECKING:
    import signal
    from typing import Any, Callable, Optional
else:
    # signal's own functions, without the enum wrappers of ``signal`` (~1.5 ms
    # of start-up); typeshed knows them as ``signal``.
    import _signal as signal

_monotonic = time.monotonic
#: Delay before repeating an inconclusive check (the graph changed while it was read).
_RECHECK = 0.001
#: Blocked threads share a budget of about ``_SPREAD / check_interval`` wake-ups
#: a second: with n threads blocked, each sleeps ``check_interval * n / _SPREAD``
#: at least between two settled checks (see "Who checks when" above).
_SPREAD = 8.0
#: A blocked thread's sleep between settled checks doubles up to this (seconds),
#: or up to the shared budget's share when more threads are blocked.
_MAX_IDLE = 1.0
#: How long a stall scan that found a thread able to run is trusted while no
#: thread changed its wait (``_state.epoch``): what it cannot see change (a
#: signal handler removed, a native thread ending) is looked at again after this.
_RESCAN = 0.5
#: How long an untimed wait lasts before it is registered and checked (the
#: accelerator spends it in C for Lock and RLock: see ``_speedups.c``).
QUIET_WAIT_US = 1000
_QUIET_WAIT = QUIET_WAIT_US / 1e6
#: A wait that finds this many threads already waiting for the same thing
#: (a Condition's unnotified waiters; the C accelerator counts threads blocked
#: on a lock, LW_QUEUE_SKIP) skips the quiet wait: behind a queue it would
#: time out, costing one more wake-up, and register the wait anyway.
QUEUE_SKIP = 2


class CondWaiter:
    """A thread waiting in ``Condition.wait``: notified or not, and on what."""

    __slots__ = ("cond", "lock", "notified")

    def __init__(self, cond: Any, lock: Any) -> None:
        self.cond = cond
        self.lock = lock
        self.notified = False


class JoinWait:
    """A thread waiting in ``Thread.join`` for ``thread``; acts as the raw lock."""

    __slots__ = ("thread", "_join")

    def __init__(self, thread: threading.Thread, join: Callable[..., Any]) -> None:
        self.thread = thread
        self._join = join

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        self._join(self.thread, timeout if timeout >= 0 else None)
        return not self.thread.is_alive()


# ---------------------------------------------------------------- blocking


def wait_lock(ts: ThreadState, lock: Any, timeout: float, quiet: bool = True) -> bool:
    """Block until ``lock``'s inner lock is acquired (or the timeout passes)."""
    return block_on(ts, lock, lock._inner, timeout, quiet)


def block_on(ts: ThreadState, resource: Any, raw: Any, timeout: Optional[float],
             quiet: bool = True, got: Optional[list[Any]] = None) -> bool:
    """Acquire ``raw`` while registered as waiting on ``resource``.

    ``timeout`` is None or negative for "forever". An untimed wait is checked
    for deadlock when it has lasted ``_QUIET_WAIT`` and after every sleep; it
    raises DeadlockError (and is then not acquired) when the wait can never
    end and the policy says so. ``quiet=False``: that quiet wait was spent.

    ``got`` receives the result of every try of ``raw`` as the try returns:
    ``got and got[-1]`` says whether ``raw`` is taken, also when an exception
    (KeyboardInterrupt, a signal handler's) comes out of this call after the
    take, which may happen at any call's return. The result is stored by C
    code (``got[:] = map(raw.acquire, ...)``): no bytecode, so no eval-breaker
    check, runs between the acquire and the store.
    """
    if got is None:
        got = []
    timed = timeout is not None and timeout >= 0
    since = _monotonic()
    if not timed and quiet:
        got[:] = map(raw.acquire, _BLOCK, (_QUIET_WAIT,))
        if got[0]:
            # Most contended waits are short. Waiting first, with the GIL released
            # and nothing registered, lets the holder finish at once instead of
            # waiting for the GIL while this thread registers and checks (which
            # lengthens every critical section and turns contention into a
            # convoy). A wait that closes a cycle is checked just as well, later.
            return True
    try:  # registered in the try: an exception at its return still unregisters
        begin_wait(ts, resource, timed, since)
        if timed:
            assert timeout is not None
            if timeout > 0:
                got[:] = map(raw.acquire, _BLOCK, (timeout,))
            else:
                got[:] = map(raw.acquire, _TRY)
            return bool(got[0])
        blocked.add(ts)
        pending, settled = check(ts, None)
        idle = 0.0
        while True:
            if pending is not None:
                wait = settings.confirm_delay
            elif settled:
                # Back off: see "Who checks when" above.
                interval = settings.check_interval
                if idle == 0.0:
                    idle = interval * max(1.0, len(blocked) / _SPREAD)
                else:
                    idle = min(idle * 2.0, max(_MAX_IDLE, interval,
                                               interval * len(blocked) / _SPREAD))
                # Each thread its own fraction of it, so that threads that
                # blocked together do not all wake together (a GIL convoy).
                wait = idle * _phase(ts)
            else:
                wait = min(_RECHECK, settings.check_interval)
            got[:] = map(raw.acquire, _BLOCK, (wait,))
            if got[0]:
                if ts.doom is not None:
                    if isinstance(resource, CondWaiter) and not resource.notified:
                        check(ts, None)  # raises the doom
                    ts.doom = None
                return True
            pending, settled = check(ts, pending)
    finally:
        end_wait(ts)
        blocked.discard(ts)


def _phase(ts: ThreadState) -> float:
    """A fraction in [0.5, 1) fixed per thread (a hash of its uid)."""
    return 0.5 + ((ts.uid * 0x9E3779B1) & 0xFFFF) / 0x20000


#: Arguments of the tries in ``block_on``, as ``map`` takes them.
_BLOCK = (True,)
_TRY = (False,)


def waiters_of(resource: Any) -> list[int]:
    return [ts.ident for ts in list(states.values()) if ts.waiting is resource]


# ---------------------------------------------------------------- checking

if TYPE_CHECKING:
    Pending = Optional[tuple[list[tuple[ThreadState, int, Any]], float]]

#: Extra checks run by a blocked thread before the rules above; each may raise
#: DeadlockError (``lockwise.aio`` adds "the loop's thread blocks on a lock it owns").
wait_checks: list[Callable[[ThreadState], None]] = []


def check(ts: ThreadState, pending: Pending) -> tuple[Pending, bool]:
    """One deadlock check by a blocked thread; raises if it is the victim.

    Returns the stall rule's observation to confirm (see ``_quiescence``) and
    whether the check was conclusive: False when the wait-for path changed
    while it was being read, so the caller must look again soon.
    """
    doom = ts.doom
    if doom is not None:
        ts.doom = None
        raise DeadlockError(str(doom), doom)
    try:
        for extra in wait_checks:
            extra(ts)
        walked = _ownership_cycle(ts)
        if walked is _UNSETTLED:
            return _quiescence(ts, pending), False
        if walked is not None:
            cycle = [t for t, _changes in walked]
            if _closer(ts, cycle) is ts:  # else the closer records it and raises
                _deadlock(ts, cycle, rule="cycle", seen=[c for _t, c in walked])
            return None, True
        stall = _quiescence(ts, pending)
        if unproven_hook is not None:
            _suspect(ts, unproven_hook)
        return stall, True
    except DeadlockError:
        raise
    except Exception as exc:
        if raised_outside(exc):
            raise  # a signal handler's or finalizer's: the program's, as without lockwise
        _findings.internal_error("the deadlock check", exc)
        return None, True


def _is_lock(res: Any) -> bool:
    return not isinstance(res, (CondWaiter, JoinWait))


def _valid(res: Any) -> bool:
    """Is a registered wait on ``res`` still a real wait?"""
    if isinstance(res, CondWaiter):
        return not res.notified
    if isinstance(res, JoinWait):
        return res.thread.is_alive()
    return res._owner is not None and bool(res._inner.locked())


#: How a wait's edge may be ended, from the weakest to the strongest evidence.
ANY_THREAD = 0    # a Lock taken by a bare acquire(): any thread may release it (hand-off)
OWN_THREAD = 1    # a Lock taken in a ``with`` block: its own ``__exit__`` releases it
OWNER_ONLY = 2    # an RLock (FileLock, ...) or a join: only that thread can end the wait


def release_evidence(lock: Any) -> int:
    """What ends a wait on ``lock``, as far as lockwise can prove it.

    Only the owner can release an RLock (and the other locks with a recursion
    count: FileLock, RedisLock, and a module's import lock,
    ``_imports.ImportLock``, which only the thread running the module's top
    level releases). A plain Lock may be released by any thread: its holder
    is its releaser only when it took the lock in a ``with`` block (and its
    site was never seen released by another thread); a bare ``acquire()`` may
    be a hand-off to a thread that releases it later.
    """
    if hasattr(lock, "_count"):
        return OWNER_ONLY
    if getattr(lock, "_held_in_with", False) and not lock._site.signal:
        return OWN_THREAD
    return ANY_THREAD


def _next_hop(ts: ThreadState) -> Optional[tuple[ThreadState, int]]:
    """Whom ``ts`` waits for, and what ends the wait (see ``release_evidence``)."""
    res = ts.waiting
    if res is None or ts.wait_timed or not _valid(res):
        return None
    if isinstance(res, CondWaiter):
        return None
    if isinstance(res, JoinWait):
        target = state_of(res.thread.ident or 0)
        return None if target is None else (target, OWNER_ONLY)
    # Read once: _valid read it too, but the owner may have released it
    # since (without the GIL, even between two reads here).
    owner: Optional[ThreadState] = res._owner
    if owner is None:
        return None
    return owner, release_evidence(res)


def _walk(me: ThreadState) -> Optional[list[tuple[ThreadState, int]]]:
    """The ownership path from ``me`` back to ``me``, or None.

    Only edges that one thread alone can end are followed: a path through a
    Lock that another thread may release proves nothing (rule 2 decides).
    """
    path = [(me, me.changes)]
    seen = {me}
    cur = me
    while True:
        hop = _next_hop(cur)
        if hop is None:
            return None
        nxt, evidence = hop
        if evidence == ANY_THREAD:
            return None
        if nxt is me:
            return path  # a cycle; of one thread when it waits for a lock it holds
        if not nxt.alive:
            # The owner exited holding the lock. Nobody else can release an
            # RLock; a Lock still inside a with-block of an exited thread
            # belongs to a suspended generator that another thread may close.
            if cur is me and evidence == OWNER_ONLY:
                return path + [(nxt, nxt.changes)]
            return None
        if nxt in seen:
            return None
        seen.add(nxt)
        path.append((nxt, nxt.changes))
        cur = nxt


def _unproven_cycle(me: ThreadState) -> Optional[tuple[list[ThreadState], list[Any]]]:
    """The cycle through ``me`` when every edge is followed, and the locks on
    it that another thread might still release; None when there is no such
    cycle, or when it is proven (rule 1 raises it)."""
    path = [me]
    seen = {me}
    weak: list[Any] = []
    cur = me
    while True:
        hop = _next_hop(cur)
        if hop is None:
            return None
        nxt, evidence = hop
        if evidence != OWNER_ONLY and not nxt.alive:
            return (path + [nxt], weak + [cur.waiting]) if cur is me else None
        if evidence == ANY_THREAD:
            weak.append(cur.waiting)
        if nxt is me:
            return (path, weak) if weak else None
        if nxt in seen or not nxt.alive:
            return None
        seen.add(nxt)
        path.append(nxt)
        cur = nxt


if TYPE_CHECKING:
    UnprovenHook = Callable[[list[ThreadState], list[Any], float], None]

#: Reports a cycle that cannot be proven once it has lasted
#: ``settings.unproven_after``: set by ``_watchdog`` (a ``hang`` finding).
unproven_hook: Optional[UnprovenHook] = None


def _suspect(ts: ThreadState, hook: UnprovenHook) -> None:
    """Track the unproven cycle ``ts`` is in; report it once it has lasted.

    Nothing is raised: a Lock on the cycle was taken by a bare ``acquire()``
    (or its owner exited), so another thread may still release it. But a
    program frozen that way must not be silent either. The cycle is the same
    formation while every thread on it keeps the same wait (``uid``,
    ``changes``); every thread on it tracks it, the finding's key merges them.
    """
    found = _unproven_cycle(ts)
    if found is None:
        ts.suspect = None
        return
    threads, weak = found
    key = frozenset((t.uid, t.changes) for t in threads)
    now = _monotonic()
    seen = ts.suspect
    if seen is None or seen[0] != key:
        ts.suspect = (key, now, False)
        return
    if seen[2] or now - seen[1] < settings.unproven_after:
        return
    ts.suspect = (key, seen[1], True)
    hook(threads, weak, now - seen[1])


def _closer(me: ThreadState, cycle: list[ThreadState]) -> ThreadState:
    """The thread of a cycle whose wait closed it (registered last): the victim.

    Every blocked thread of a cycle may find it; without the GIL two of them
    check at the same moment, and the first to record the formation raised: a
    thread that had been waiting all along, or the one whose acquire closed
    the cycle, by chance. Only the closer records and raises it: a thread that
    retries its acquire after DeadlockError meets the error again, the others
    keep waiting. The closer finds the cycle itself: it checks as soon as it
    has registered its wait, and then periodically like every thread blocked
    in ``block_on`` (the only waits that are edges of a cycle), so the others
    need not record it (recording it for the closer and making it raise
    through ``doom`` races with the closer's own check: two formations
    recorded for one deadlock). Only threads really waiting count: an exited
    owner's last wait is no candidate.
    """
    best = me
    for ts in cycle:
        if ts is not me and ts.alive and ts.waiting is not None and ts.wait_seq > best.wait_seq:
            best = ts
    return best


#: Returned by ``_ownership_cycle`` when the path changed between two reads.
_UNSETTLED: list[tuple[ThreadState, int]] = []


def _ownership_cycle(me: ThreadState) -> Optional[list[tuple[ThreadState, int]]]:
    """The cycle through ``me`` as (thread, its ``changes`` when read) pairs,
    None, or ``_UNSETTLED``."""
    first = _walk(me)
    if first is None:
        return None
    # Read again: every participant must have stayed in the same wait.
    second = _walk(me)
    if second != first:
        return _UNSETTLED
    return first


def _wakes_nothing(handler: Any) -> bool:
    """A handler known to wake nothing: it only interrupts or fails.

    Ctrl-C's: ``default_int_handler`` and asyncio.run's ``Runner._on_sigint``
    (a person stopping a frozen program, not a wake-up the program relies
    on). pytest-timeout's SIGALRM handler (``timeout_method = "signal"``)
    raises in the main thread to fail a test that ran too long; it never
    releases, sets or notifies anything the program waits for.
    """
    if handler is signal.default_int_handler:
        return True
    func = getattr(getattr(handler, "func", handler), "__func__", None)
    if func is not None and getattr(func, "__qualname__", "") == "Runner._on_sigint":
        return True
    return getattr(handler, "__module__", None) == "pytest_timeout"


def signal_may_wake() -> bool:
    """Could a Python signal handler still run and wake a blocked thread?

    A handler runs on the main thread, even while it is blocked in a lockwise
    wait (the wait is made of short timed waits, between which handlers run),
    and can set an Event, notify a Condition or release a Lock that any thread
    waits for: the SIGTERM handler that sets a stop Event, a SIGALRM timer
    armed with ``signal.setitimer``. See ``_wakes_nothing`` for the exceptions.
    """
    if not settings.signals_wake_main:
        return False
    for sig in signal.valid_signals():
        try:
            handler = signal.getsignal(sig)
        except (ValueError, OSError):
            continue
        if callable(handler) and not _wakes_nothing(handler):
            return True
    return False


_TASKS = "/proc/self/task"


def os_thread_count() -> Optional[int]:
    """How many threads the process really runs (Linux), or None if unknown."""
    try:
        return len(os.listdir(_TASKS))
    except OSError:
        return None


def _in_shutdown(frame: Any) -> bool:
    shutdown = getattr(threading, "_shutdown", None)
    return frame is not None and shutdown is not None and frame.f_code is shutdown.__code__


#: The ident of the thread ``_one_runs`` last found running: looked at first
#: next time (in a storm of waits, one thread runs while all others queue).
_runner_hint = 0


#: The lock types shared with other processes (``_mp`` adds multiprocessing's
#: when it is imported): empty, the check below costs nothing.
cross_process_types: tuple[type, ...] = ()


def _released_from_outside(res: Any) -> bool:
    """Is ``res`` a lock shared with other processes (a multiprocessing lock,
    ``_mp``) that one of them may release: one taken by a bare ``acquire()``
    (a hand-off)? Then a wait on it may end whatever this process does."""
    types = cross_process_types
    return bool(types) and isinstance(res, types) and release_evidence(res) == ANY_THREAD


def _runs(ts: Optional[ThreadState]) -> bool:
    """Can the thread of ``ts`` run, as far as its registered wait says?"""
    if ts is None:
        return True  # unknown to lockwise: it can run
    res = ts.waiting
    return res is None or ts.wait_timed or not _valid(res) or _released_from_outside(res)


def _one_runs() -> bool:
    """Cheap first pass of ``_scan``: is a thread known to ``threading`` running?

    The main thread first (the most likely to run), then the one found running
    last time, then the others, stopping at the first one that runs: O(1) in
    the common case, and no allocation but the list of idents.
    """
    global _runner_hint
    main = threading.main_thread()
    if _runs(states.get(main.ident or 0)):
        # Unless it waits for the other threads at exit (``_scan`` reads its frame).
        return not getattr(threading, "_SHUTTING_DOWN", True)
    hint = _runner_hint
    active = getattr(threading, "_active", ())
    if hint and hint not in internal_threads and hint in active and _runs(states.get(hint)):
        return True
    for ident in list(active):  # gone: the full scan decides
        if ident in internal_threads:
            continue
        if _runs(states.get(ident)):
            _runner_hint = ident
            return True
    return False


def _scan() -> Optional[list[tuple[ThreadState, int, Any]]]:
    """Every live thread with its wait, if all are blocked and nothing lockwise
    cannot see could wake one; else None."""
    if threads_starting():
        return None  # a thread is starting (or unknowable): it can run
    if _one_runs():
        return None
    main_ident = threading.main_thread().ident
    blocked: list[tuple[ThreadState, int, Any]] = []
    frames: dict[int, Any] = sys._current_frames()
    nframes = len(frames)
    # Not this very frame: a local referring to it is a reference cycle that
    # keeps the whole blocked stack (a joined Thread, its queues...) alive until
    # the next garbage collection. Our own entry needs no frame.
    frames[threading.get_ident()] = None
    for ident, frame in frames.items():
        if ident in internal_threads:
            continue
        ts = states.get(ident)
        if ts is None or not ts.alive:
            if ident == main_ident and _in_shutdown(frame):
                continue  # waiting in threading._shutdown for the other threads
            return None
        changes = ts.changes
        res = ts.waiting
        if res is None or ts.wait_timed or not _valid(res) or _released_from_outside(res):
            if ident == main_ident and res is None and _in_shutdown(frame):
                continue
            return None
        if isinstance(res, JoinWait) and res.thread.ident in internal_threads:
            return None  # a join of lockwise's own thread, which the scan skips: it runs
        blocked.append((ts, changes, res))
    # The checks that cost a system call or a walk over every signal come last:
    # in a busy program the loop above has already found a running thread.
    # A thread without a Python frame (made by a C library: audio, devices,
    # GUIs, ctypes callbacks) may call back into Python and wake anyone.
    tasks = os_thread_count()
    if tasks is not None and tasks > nframes:
        return None
    if signal_may_wake():
        return None  # e.g. a SIGTERM handler that sets the Event the workers wait on
    return blocked


def _same(a: list[tuple[ThreadState, int, Any]], b: list[tuple[ThreadState, int, Any]]) -> bool:
    return {(id(t), c, id(r)) for t, c, r in a} == {(id(t), c, id(r)) for t, c, r in b}


def _may_all_be_blocked() -> bool:
    """Cheap pre-check: could every thread be blocked? (No allocation.)

    One registered thread may be missing: the main thread waiting in
    ``threading._shutdown`` is blocked without being registered.
    """
    running = threads_registered()
    return running > 0 and len(blocked) + 1 + len(internal_threads) >= running


#: (``_state.epoch[0]``, when): the last stall scan that found a thread able to run.
_ran_at: tuple[int, float] = (-1, 0.0)


def _quiescence(me: ThreadState, pending: Pending) -> Pending:
    global _ran_at
    if not _may_all_be_blocked():
        return None
    seen = epoch[0]
    now = _monotonic()
    if pending is None and _ran_at[0] == seen and now - _ran_at[1] < _RESCAN:
        # No thread changed its wait since a scan found one that can run: it
        # still can (blocked threads' periodic checks cost O(1), not O(threads)).
        return None
    snap = _scan()
    if snap is None:
        _ran_at = (seen, now)
        return None
    if pending is None:
        return (snap, now)
    old, since = pending
    if not _same(old, snap):
        return (snap, now)
    if now - since < settings.confirm_delay:
        return pending
    victim = min(snap, key=_victim_rank)[0]
    _deadlock(me, [ts for ts, _c, _r in snap], rule="stall", victim=victim)
    return None


def _victim_rank(entry: tuple[ThreadState, int, Any]) -> tuple[int, int, float]:
    """Prefer threads whose wait nobody can satisfy; the main thread last."""
    ts, _changes, res = entry
    if isinstance(res, CondWaiter):
        rank = 1
    elif isinstance(res, JoinWait):
        rank = 3
    else:
        rank = 0 if res._owner is ts else 2
    is_main = 1 if ts.ident == threading.main_thread().ident else 0
    return (rank, is_main, -ts.wait_since)


# ---------------------------------------------------------------- findings


def _deadlock(me: ThreadState, threads: list[ThreadState], rule: str,
              victim: Optional[ThreadState] = None,
              seen: Optional[list[int]] = None) -> None:
    """Record the deadlock once per formation; make the victim (``me`` by
    default) raise.

    The key is the formation of the waits: each thread's ``uid`` (never
    reused, unlike idents) and ``changes`` (bumped by every wait
    registration), as ``seen`` when the cycle was read (else now). Threads
    that detect one formation concurrently build the same key, and
    ``record`` admits it once, so one thread raises; the same deadlock formed
    again (fresh threads and locks, or a retry after DeadlockError) has new
    ``changes`` and raises again.
    """
    victim = victim or me
    if seen is None:
        seen = [ts.changes for ts in threads]
    key = ("deadlock", frozenset(zip([ts.uid for ts in threads], seen)))
    if _findings.is_known(key):
        return
    # The formation must still stand. A thread leaving a wait (the victim of
    # this very formation, raising, too) clears ``waiting``, then bumps
    # ``changes``: one that left since the cycle was read shows either.
    # Without the GIL the other thread of an AB/BA may raise, release and
    # exit between this thread's read of the cycle and this line; its
    # ``alive`` is then False and ``changes`` is what tells (seen on 3.13t:
    # DeadlockError in both threads).
    if any(ts.changes != c or (ts.alive and ts.waiting is None)
           for ts, c in zip(threads, seen)):
        return
    finding = build_finding(threads, rule, victim, key)
    raising = victim is me and settings.on_deadlock == "raise"
    res = me.waiting
    if raising:
        # This thread is about to raise, not to wait: stop counting as blocked
        # now, or other threads' stall rule reports the same freeze again while
        # the finding is recorded (block_on's finally repeats this harmlessly).
        me.waiting = None
        me.changes += 1
        epoch[0] = next_epoch()
    me.quiet += 1
    try:
        new = _findings.record(finding)
        must_raise = new and _findings.apply_policy(finding, settings.on_deadlock)
    finally:
        me.quiet -= 1
    if not must_raise:
        if raising and res is not None:
            # Another thread recorded this formation first and raises: this
            # one keeps waiting, registered again (a new formation).
            me.changes += 1
            me.waiting = res
            epoch[0] = next_epoch()
        return
    if victim is me:
        raise DeadlockError(str(finding), finding)
    victim.doom = finding
    res = victim.waiting
    if isinstance(res, CondWaiter):
        try:  # wake it now; notify() tolerates a waiter released twice
            res.lock.release()
        except RuntimeError:
            pass


def describe_wait(ts: ThreadState, refs: dict[int, Any]) -> dict[str, Any]:
    """JSON-ready description of what ``ts`` waits for."""
    res = ts.waiting
    if res is None:
        return {"kind": "running"}
    if isinstance(res, JoinWait):
        return {"kind": "join", "thread": res.thread.name, "timed": ts.wait_timed}
    if isinstance(res, CondWaiter):
        cond = res.cond
        ref = refs.get(id(cond))
        return {"kind": "condition", "lock": ref.to_dict() if ref else None, "timed": ts.wait_timed}
    ref = refs.get(id(res))
    owner = res._owner
    return {"kind": "lock", "lock": ref.to_dict() if ref else None, "timed": ts.wait_timed,
            "held_by": name_of(owner), "held_by_self": owner is ts}


def _held(refs: dict[int, Any], lock: Any, frame: Any) -> dict[str, Any]:
    """A held lock's entry in a finding: which, where taken, and, when it was
    taken inside the standard library, the program's line that led there."""
    entry = {"lock": refs[id(lock)].to_dict(), "acquired_at": acquired_at(lock)}
    via = acquired_from(lock, frame)
    if via is not None:
        entry["acquired_from"] = via
    return entry


def build_finding(threads: list[ThreadState], rule: str, victim: ThreadState,
                  key: Any) -> Finding:
    from ._report import render_deadlock  # reporting depends on findings, not the reverse

    frames = sys._current_frames()
    objs: list[Any] = []
    for ts in threads:
        objs.extend(ts.held)
        res = ts.waiting
        if isinstance(res, CondWaiter):
            objs.append(res.cond)
        elif res is not None and _is_lock(res):
            objs.append(res)
    refs = lock_refs(objs)
    entries: list[dict[str, Any]] = []
    stacks = []
    for ts in threads:
        name = name_of(ts)
        frame = frames.get(ts.ident)
        holds = [_held(refs, lock, frame) for lock in list(ts.held)]
        entries.append({"thread": name, "ident": ts.ident, "alive": ts.alive, "holds": holds,
                        "waits_for": describe_wait(ts, refs)})
        if ts.alive:
            stacks.append(StackInfo(name, "blocked here" if ts is not victim
                                    else "raises DeadlockError here",
                                    user_stack(frames.get(ts.ident))))
    frames.clear()  # it holds this frame: no reference cycle (see _scan)
    names = [e["thread"] for e in entries]
    victim_wait = victim.waiting
    victim_owner = victim_wait._owner if victim_wait is not None and _is_lock(victim_wait) \
        else None
    if rule == "stall" and victim_owner is victim:
        summary = (f"{name_of(victim)} waits for itself: it already holds "
                   f"{refs[id(victim_wait)].name} and no other thread can release it")
    elif rule == "stall" and victim_owner is not None and not victim_owner.alive:
        summary = (f"{name_of(victim)} waits for {refs[id(victim_wait)].name}, held by "
                   f"{name_of(victim_owner)}, which has exited, and no other thread "
                   f"can release it")
    elif rule == "cycle" and len(threads) == 1:
        summary = f"{names[0]} waits for itself"
    elif rule == "cycle" and not threads[-1].alive:
        summary = f"{names[0]} waits for a lock held by {names[-1]}, which has exited"
    elif rule == "cycle":
        summary = f"{', '.join(names)} wait for each other in a cycle"
    else:
        summary = f"every thread is blocked and none can wake the others ({', '.join(names)})"
    details: dict[str, Any] = {"rule": rule, "victim": name_of(victim), "threads": entries}
    link = _fork_link(threads)
    if link is not None:  # a forked child waits on a lock held at the fork
        details["fork_hazard"] = link
        summary += (f" ({link['lock']['name']} was held by {link['owner']} of the parent "
                    "process when it forked)")
    finding = Finding(
        kind="deadlock", summary=summary, threads=names, locks=list(refs.values()),
        stacks=stacks, details=details, key=key,
    )
    finding.text = render_deadlock(finding)
    return finding


def _fork_link(threads: list[ThreadState]) -> Optional[dict[str, Any]]:
    """The fork-hazard link of a lock some thread of the deadlock waits on, if
    another thread of the parent held it when this process was forked."""
    if not _fork._inherited:
        return None
    for ts in threads:
        res = ts.waiting
        if res is not None and not isinstance(res, (CondWaiter, JoinWait)):
            link = _fork.link_of(res)
            if link is not None:
                return link
    return None
