"""Actual deadlocks: the wait-for relation, checked whenever a thread blocks.

Two rules decide that a wait can never end:

1. **Ownership cycle.** Follow "waits for the owner of" from the blocking
   thread: through Locks and RLocks to their owners, through joins to the
   joined thread. Returning to the start is a deadlock. Edges through a
   Lock that has been used as a signal (released by another thread) are not
   followed, and a thread waiting on a Lock it holds itself is left to rule 2
   (another thread may release it: hand-off). A wait on a lock whose owner
   has exited is a deadlock too. Cost: one step per thread on the path.
2. **Nobody left to run.** Every live thread is blocked, without a timeout,
   on something lockwise sees (a lock, a Condition, hence Event, Semaphore,
   Barrier and queue, or a join). Then nothing can release anything: the
   per-process form of Go's "all goroutines are asleep". It must hold on two
   scans ``confirm_delay`` apart, with no thread having changed its wait in
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
``check_interval`` between checks: that catches what forms without a new
wait (an owner that exits holding the lock, a victim chosen by another
thread's stall check) and keeps waits free of wake-ups, which cost a GIL
hand-off each.

Limits: a thread blocked outside lockwise (sockets, sleep, C-level queues,
locks created before ``install()``) counts as able to run, and so does the
main thread waiting on a Condition (Event, Semaphore, queue...) while a
Python signal handler is installed (the SIGTERM handler that sets the Event
main waits on); then rule 2 stays silent and the watchdog reports the hang.
Timer signals (SIGALRM, SIGVTALRM, SIGPROF) are taken as timeouts and
profilers, not wake-ups.
"""

from __future__ import annotations

import sys
import threading
import time

from . import _findings
from ._config import settings
from ._describe import acquired_at, lock_refs, name_of
from ._errors import DeadlockError
from ._findings import Finding, StackInfo
from ._sites import user_stack
from ._state import (
    ThreadState,
    begin_wait,
    blocked,
    end_wait,
    internal_threads,
    state_of,
    states,
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
#: How long an untimed wait lasts before it is registered and checked (the
#: accelerator spends it in C for Lock and RLock: see ``_speedups.c``).
QUIET_WAIT_US = 1000
_QUIET_WAIT = QUIET_WAIT_US / 1e6


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
             quiet: bool = True) -> bool:
    """Acquire ``raw`` while registered as waiting on ``resource``.

    ``timeout`` is None or negative for "forever". An untimed wait is checked
    for deadlock when it has lasted ``_QUIET_WAIT`` and after every sleep; it
    raises DeadlockError (and is then not acquired) when the wait can never
    end and the policy says so. ``quiet=False``: that quiet wait was spent.
    """
    timed = timeout is not None and timeout >= 0
    since = _monotonic()
    if not timed and quiet and raw.acquire(True, _QUIET_WAIT):
        # Most contended waits are short. Waiting first, with the GIL released
        # and nothing registered, lets the holder finish at once instead of
        # waiting for the GIL while this thread registers and checks (which
        # lengthens every critical section and turns contention into a
        # convoy). A wait that closes a cycle is checked just as well, later.
        return True
    begin_wait(ts, resource, timed, since)
    try:
        if timed:
            assert timeout is not None
            return bool(raw.acquire(True, timeout) if timeout > 0 else raw.acquire(False))
        blocked.add(ts)
        pending, settled = check(ts, None)
        while True:
            if pending is not None:
                wait = settings.confirm_delay
            elif settled:
                wait = settings.check_interval
            else:
                wait = min(_RECHECK, settings.check_interval)
            if raw.acquire(True, wait):
                if ts.doom is not None:
                    if isinstance(resource, CondWaiter) and not resource.notified:
                        check(ts, None)  # raises the doom
                    ts.doom = None
                return True
            pending, settled = check(ts, pending)
    finally:
        end_wait(ts)
        blocked.discard(ts)


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
        cycle = _ownership_cycle(ts)
        if cycle is _UNSETTLED:
            return _quiescence(ts, pending), False
        if cycle is not None:
            _deadlock(ts, cycle, rule="cycle")
            return None, True
        return _quiescence(ts, pending), True
    except DeadlockError:
        raise
    except Exception as exc:
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


def _next_hop(ts: ThreadState) -> Optional[tuple[ThreadState, bool]]:
    """Whom ``ts`` waits for, and whether only that thread can end the wait."""
    res = ts.waiting
    if res is None or ts.wait_timed or not _valid(res):
        return None
    if isinstance(res, CondWaiter):
        return None
    if isinstance(res, JoinWait):
        target = state_of(res.thread.ident or 0)
        return None if target is None else (target, True)
    owner: ThreadState = res._owner
    strict = hasattr(res, "_count") or not res._site.signal
    return owner, strict


def _walk(me: ThreadState) -> Optional[list[tuple[ThreadState, int]]]:
    path = [(me, me.changes)]
    seen = {me}
    cur = me
    while True:
        hop = _next_hop(cur)
        if hop is None:
            return None
        nxt, strict = hop
        if not strict:
            return None
        if nxt is me:
            return None if cur is me else path
        if not nxt.alive:
            # The owner exited holding the lock: nobody can release it.
            return path + [(nxt, nxt.changes)] if cur is me else None
        if nxt in seen:
            return None
        seen.add(nxt)
        path.append((nxt, nxt.changes))
        cur = nxt


#: Returned by ``_ownership_cycle`` when the path changed between two reads.
_UNSETTLED: list[ThreadState] = []


def _ownership_cycle(me: ThreadState) -> Optional[list[ThreadState]]:
    """The threads of the cycle through ``me``, None, or ``_UNSETTLED``."""
    first = _walk(me)
    if first is None:
        return None
    # Read again: every participant must have stayed in the same wait.
    second = _walk(me)
    if second != first:
        return _UNSETTLED
    return [ts for ts, _changes in first]


_WAKE_EXEMPT = {getattr(signal, name) for name in ("SIGALRM", "SIGVTALRM", "SIGPROF")
                if hasattr(signal, name)}


def _signal_may_wake_main() -> bool:
    if not settings.signals_wake_main:
        return False
    for sig in signal.valid_signals():
        if sig in _WAKE_EXEMPT:
            continue
        try:
            handler = signal.getsignal(sig)
        except (ValueError, OSError):
            continue
        if callable(handler) and handler is not signal.default_int_handler:
            return True
    return False


def _in_shutdown(frame: Any) -> bool:
    shutdown = getattr(threading, "_shutdown", None)
    return frame is not None and shutdown is not None and frame.f_code is shutdown.__code__


def _scan() -> Optional[list[tuple[ThreadState, int, Any]]]:
    """Every live thread with its wait, if all are blocked; else None."""
    if getattr(threading, "_limbo", None):
        return None  # a thread is starting: it can run
    main_ident = threading.main_thread().ident
    blocked: list[tuple[ThreadState, int, Any]] = []
    frames: dict[int, Any] = sys._current_frames()
    # Not this very frame: a local referring to it is a reference cycle that
    # keeps the whole blocked stack (a joined Thread, its queues...) alive until
    # the next garbage collection. Our own entry needs no frame.
    frames[threading.get_ident()] = None
    for ident, frame in frames.items():
        if ident in internal_threads:
            continue
        ts = states.get(ident)
        if ts is None or not ts.alive:
            if ident == main_ident and _in_shutdown(frame) and not _signal_may_wake_main():
                continue  # waiting in threading._shutdown for the other threads
            return None
        changes = ts.changes
        res = ts.waiting
        if res is None or ts.wait_timed or not _valid(res):
            if ident == main_ident and res is None and _in_shutdown(frame):
                continue
            return None
        if ident == main_ident and isinstance(res, CondWaiter) and _signal_may_wake_main():
            return None  # e.g. a SIGTERM handler that sets the Event main waits on
        blocked.append((ts, changes, res))
    return blocked


def _same(a: list[tuple[ThreadState, int, Any]], b: list[tuple[ThreadState, int, Any]]) -> bool:
    return {(id(t), c, id(r)) for t, c, r in a} == {(id(t), c, id(r)) for t, c, r in b}


def _may_all_be_blocked() -> bool:
    """Cheap pre-check: could every thread be blocked? (No allocation.)

    One registered thread may be missing: the main thread waiting in
    ``threading._shutdown`` is blocked without being registered.
    """
    running = len(threading._active) + len(threading._limbo)  # type: ignore[attr-defined]
    return len(blocked) + 1 + len(internal_threads) >= running


def _quiescence(me: ThreadState, pending: Pending) -> Pending:
    if not _may_all_be_blocked():
        return None
    snap = _scan()
    if snap is None:
        return None
    now = _monotonic()
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
              victim: Optional[ThreadState] = None) -> None:
    """Record the deadlock once per formation; make the victim (``me`` by
    default) raise.

    The key is the formation of the waits: each thread's ``uid`` (never
    reused, unlike idents) and ``changes`` (bumped by every wait
    registration). Threads that detect one formation concurrently build the
    same key, and ``record`` admits it once, so one thread raises; the same
    deadlock formed again (fresh threads and locks, or a retry after
    DeadlockError) has new ``changes`` and raises again.
    """
    victim = victim or me
    key = ("deadlock", frozenset((ts.uid, ts.changes) for ts in threads))
    if _findings.is_known(key):
        return
    # ``changes`` is read before ``waiting``: a thread that left this wait
    # (the victim of this very formation, raising) shows ``waiting`` None here
    # whatever ``changes`` value went into the key.
    if any(ts.alive and ts.waiting is None for ts in threads):
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
        holds = [{"lock": refs[id(lock)].to_dict(), "acquired_at": acquired_at(lock)}
                 for lock in list(ts.held)]
        entries.append({"thread": name, "ident": ts.ident, "alive": ts.alive, "holds": holds,
                        "waits_for": describe_wait(ts, refs)})
        if ts.alive:
            stacks.append(StackInfo(name, "blocked here" if ts is not victim
                                    else "raises DeadlockError here",
                                    user_stack(frames.get(ts.ident))))
    frames.clear()  # it holds this frame: no reference cycle (see _scan)
    names = [e["thread"] for e in entries]
    victim_wait = victim.waiting
    if rule == "stall" and victim_wait is not None and _is_lock(victim_wait) \
            and victim_wait._owner is victim:
        summary = (f"{name_of(victim)} waits for itself: it already holds "
                   f"{refs[id(victim_wait)].name} and no other thread can release it")
    elif rule == "cycle" and len(threads) == 1:
        summary = f"{names[0]} waits for itself"
    elif rule == "cycle" and not threads[-1].alive:
        summary = f"{names[0]} waits for a lock held by {names[-1]}, which has exited"
    elif rule == "cycle":
        summary = f"{', '.join(names)} wait for each other in a cycle"
    else:
        summary = f"every thread is blocked and none can wake the others ({', '.join(names)})"
    finding = Finding(
        kind="deadlock", summary=summary, threads=names, locks=list(refs.values()),
        stacks=stacks,
        details={"rule": rule, "victim": name_of(victim), "threads": entries},
        key=key,
    )
    finding.text = render_deadlock(finding)
    return finding
