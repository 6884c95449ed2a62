"""The watchdog: reports threads blocked on lockwise primitives for too long.

Deadlock rules catch freezes that are certain; the watchdog catches the rest
(a producer blocked on a full queue whose consumer only retries, with a
timeout, a lock the producer holds...). A daemon thread polls
every thread's ``ThreadState`` and, when a thread has been blocked without a
timeout on a lockwise lock, Condition (so Event, Semaphore, Barrier, queue)
or join for longer than ``timeout`` seconds, records one ``hang`` finding
with every thread's user stack and the table of who holds and who waits for
what. Each stuck wait is reported once (it is identified by the thread and
its ``changes`` counter, which moves whenever the thread stops waiting, and
by the thread's ``uid``, not its ident, which a new thread may reuse);
waits that become stuck at the same poll share one finding.

Timed waits (``acquire(timeout=...)``, ``Event.wait(5)``...) are not reported:
they end by themselves. A wait is a hang only when nothing that could end it
runs (``_stuck_threads``): not a join of a running thread (a CPU-busy one),
not a lock wait whose owner runs, not an idle consumer in ``queue.get()``
while a producer runs (computes, sleeps, reads a socket). Such waits are
only "waiting" (``lockwise.snapshot()`` shows them). asyncio tasks suspended
too long on a wait lockwise follows (its locks, ``await task``, gather,
asyncio's Event, Queue, Condition, Semaphore, Barrier, TaskGroup), with no
timer acting on them and no task that can end them running, are reported the
same way, once ``lockwise.aio`` is in use (see ``_aio_wait``).
The watchdog's own thread is registered in ``_state.internal_threads`` so the
deadlock rules never count it.
Policy: ``settings.on_hang`` (``"raise"`` cannot raise into another thread
and acts like ``"log"``). The watchdog watches the process that started it;
a forked child has none unless it starts one.
"""

from __future__ import annotations

import _thread
import os
import sys
import threading
import time

from . import _findings, _snapshot, _waitfor
from ._config import settings
from ._describe import lock_refs
from ._findings import Finding, LockRef, StackInfo
from ._report import render_hang
from ._sites import state_name, thread_name, user_stack
from ._state import ThreadState, internal_threads, states
from ._waitfor import CondWaiter, JoinWait, _in_shutdown, _valid

TYPE_CHECKING = False  # True for type checkers: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Any, Optional


def _wait_label(res: Any, refs: dict[int, LockRef]) -> str:
    if isinstance(res, JoinWait):
        return f"join of thread {res.thread.name}"
    if isinstance(res, CondWaiter):
        ref = refs.get(id(res.cond))
        return f"a notify of {ref.name} ({ref.site})" if ref else "a notify"
    ref = refs.get(id(res))
    return f"{ref.name} ({ref.site})" if ref else repr(res)


_JOIN_CODES = {getattr(threading.Thread, name).__code__
               for name in ("join", "_wait_for_tstate_lock") if hasattr(threading.Thread, name)
               and hasattr(getattr(threading.Thread, name), "__code__")}
_JOIN_CODES |= {getattr(getattr(threading.Thread.join, "__wrapped__", None), "__code__", None)}


def _joining(frame: Any) -> Optional[int]:
    """The ident of the thread that a thread in ``Thread.join`` (timed: not
    registered) waits for, read from its innermost frame; None otherwise."""
    if frame is None or frame.f_code not in _JOIN_CODES:
        return None
    try:
        thread = frame.f_locals.get("self")
    except Exception:
        return None
    ident = getattr(thread, "ident", None)
    return ident if isinstance(ident, int) else None


def _stuck_threads() -> set[int]:
    """Threads whose wait nothing that runs can end (idents; greatest fixpoint).

    A candidate is a thread blocked on a wait lockwise sees: a lock or a join
    (timed too: a retry loop on a stuck lock or thread makes no progress),
    ended only by the owner or the joined thread (``"one"``); an untimed
    Condition wait (Event, queue...) or a lock used as a signal, ended by
    any thread (``"any"``); the main thread waiting in ``threading._shutdown``
    (``"any"``); a thread in a timed ``Thread.join`` (in C, read from its frame:
``"one"``). Every other thread runs: it computes, waits with a timeout
    on a Condition (a periodic producer), or waits in C (a socket, a sleep),
    and may end any ``"any"`` wait. Then candidates are dropped while the
    thread that can end their wait is not a candidate left. The thread that
    polls is the watchdog: it counts for nothing. Cost: O(threads) per round of
    the fixpoint, rounds bounded by the length of the longest wait chain.
    """
    me = threading.get_ident()
    main_ident = threading.main_thread().ident
    frames = sys._current_frames()
    alive: set[int] = set()
    cand: dict[int, tuple[str, Optional[int]]] = {}
    for ident, frame in frames.items():
        if ident == me or ident in internal_threads:
            continue
        alive.add(ident)
        ts = states.get(ident)
        res = ts.waiting if ts is not None and ts.alive else None
        if res is None:
            if ident == main_ident and _in_shutdown(frame):
                cand[ident] = ("any", None)
            else:
                joined = _joining(frame)
                if joined is not None:  # a timed join, in C: waits for that thread only
                    cand[ident] = ("one", joined)
            continue
        assert ts is not None
        try:
            if not _valid(res):
                continue
        except Exception:
            continue
        if isinstance(res, CondWaiter):
            if not ts.wait_timed:
                cand[ident] = ("any", None)
        elif isinstance(res, JoinWait):
            cand[ident] = ("one", res.thread.ident)
        elif res._site.signal or res._owner is ts:
            if not ts.wait_timed:
                cand[ident] = ("any", None)  # anyone may release it (a hand-off)
        else:
            owner = res._owner
            cand[ident] = ("one", owner.ident if owner is not None else None)
    frames.clear()  # it holds this frame: no reference cycle (see _waitfor._scan)
    stuck = set(cand)
    changed = True
    while changed:
        changed = False
        for ident in list(stuck):
            mode, target = cand[ident]
            if mode == "one":
                ended = target is not None and target not in stuck and (
                    target in alive or target == me)
            else:  # some thread runs: stuck is a subset of alive, and holds ident
                ended = len(stuck) < len(alive)
            if ended:
                stuck.discard(ident)
                changed = True
    return stuck


def stuck_waits(timeout: float, now: Optional[float] = None) -> list[tuple[ThreadState, int]]:
    """Threads blocked without a timeout for at least ``timeout`` seconds, with their
    ``changes`` counter (the identity of the wait)."""
    now = time.monotonic() if now is None else now
    stuck = []
    hung = _stuck_threads()
    for ts in list(states.values()):
        if not ts.alive or ts.ident in internal_threads:
            continue
        changes = ts.changes
        res = ts.waiting
        if res is None or ts.wait_timed or now - ts.wait_since < timeout:
            continue
        if ts.ident not in hung:
            continue
        try:
            if not _valid(res):
                continue
        except Exception:
            continue
        if ts.changes == changes and ts.waiting is res:
            stuck.append((ts, changes))
    return stuck


def build_hang(stuck: list[tuple[ThreadState, int]], timeout: float) -> Finding:
    """The ``hang`` finding for these stuck waits (every thread's stack included)."""
    now = time.monotonic()
    objs: list[Any] = []
    for ts, _changes in stuck:
        res = ts.waiting
        if isinstance(res, CondWaiter):
            objs.append(res.cond)
        elif res is not None and not isinstance(res, JoinWait):
            objs.append(res)
        objs.extend(ts.held)
    refs = lock_refs(objs)
    names = [state_name(ts) for ts, _c in stuck]
    parts = []
    entries = []
    for (ts, _c), name in zip(stuck, names):
        label = _wait_label(ts.waiting, refs)
        seconds = now - ts.wait_since
        parts.append(f"{name} waits for {label}")
        entries.append({"thread": name, "waits_for": label, "seconds": round(seconds, 3),
                        "holds": [refs[id(lock)].to_dict() for lock in list(ts.held)
                                  if id(lock) in refs]})
    snap = _snapshot.snapshot(all_locks=False)
    table = [{"lock": {"name": lock.name, "site": lock.site, "type": lock.type},
              "owner": lock.owner, "waiters": lock.waiters}
             for lock in snap.locks if lock.locked or lock.waiters]
    conds: dict[int, tuple[Any, list[str]]] = {}
    for ts in list(states.values()):
        res = ts.waiting
        if ts.alive and isinstance(res, CondWaiter):
            conds.setdefault(id(res.cond), (res.cond, []))[1].append(state_name(ts))
    cond_refs = lock_refs([cond for cond, _w in conds.values()])
    for key, (_cond, waiters) in conds.items():
        ref = cond_refs[key].to_dict()
        ref["name"] = f"{ref['name']} (notify)"
        table.append({"lock": ref, "owner": None, "waiters": waiters})
    stuck_idents = {ts.ident for ts, _c in stuck}
    frames = sys._current_frames()
    stacks = []
    for ident, frame in frames.items():
        if ident in internal_threads:
            continue
        other = states.get(ident)
        if ident in stuck_idents and other is not None:
            title = (f"blocked for {now - other.wait_since:.1f}s on "
                     f"{_wait_label(other.waiting, refs)}")
        elif other is not None and other.waiting is not None:
            title = "waiting"
        else:
            title = "running (or blocked outside lockwise)"
        stacks.append(StackInfo(thread_name(ident), title, user_stack(frame)))
    stacks.sort(key=lambda s: s.thread not in names)
    finding = Finding(
        kind="hang",
        summary=f"blocked for more than {timeout:g}s: " + "; ".join(parts),
        threads=names, locks=list(refs.values()), stacks=stacks,
        details={"timeout": timeout, "stuck": entries, "table": table},
        key=("hang", frozenset((ts.uid, c) for ts, c in stuck)),
    )
    finding.text = render_hang(finding)
    return finding


class Watchdog:
    """A daemon thread reporting ``hang`` findings; see the module docstring.

    ``interval`` is the polling period (default: ``timeout / 4``, between
    0.05 and 1 second). ``start()`` and ``stop()`` are idempotent; ``stop()``
    joins the thread. Usable as a context manager.
    """

    def __init__(self, timeout: float, interval: Optional[float] = None) -> None:
        self.timeout = settings_seconds("timeout", timeout)
        self.interval = (settings_seconds("interval", interval) if interval is not None
                         else min(1.0, max(0.05, self.timeout / 4)))
        self._stop = _thread.allocate_lock()
        # A raw thread, not a threading.Thread: a program that joins every
        # thread in threading.enumerate() must not join this one (it never
        # ends, and plain Python has no such thread). Held while it runs;
        # stop() joins by taking it.
        self._done: Optional[_thread.LockType] = None
        self._ident: Optional[int] = None
        self._pid = 0  # a forked child has no watchdog thread, whatever _done says
        self._reported: set[tuple[int, int]] = set()
        self._reported_tasks: set[int] = set()

    @property
    def running(self) -> bool:
        done = self._done
        return done is not None and done.locked() and self._pid == os.getpid()

    def start(self) -> Watchdog:
        if self._done is None:
            self._stop.acquire()
            done = self._done = _thread.allocate_lock()
            done.acquire()
            self._pid = os.getpid()
            self._ident = _thread.start_new_thread(self._run, (done,))
        return self

    def stop(self) -> None:
        done = self._done
        if done is None:
            return
        self._done = None
        self._stop.release()
        joinable = self._pid == os.getpid() and self._ident != _thread.get_ident()
        if joinable and done.acquire(True, 5.0):
            done.release()

    def __enter__(self) -> Watchdog:
        return self.start()

    def __exit__(self, *args: object) -> None:
        self.stop()

    def _run(self, done: _thread.LockType) -> None:
        me = _thread.get_ident()
        internal_threads.add(me)
        try:
            while not self._stop.acquire(True, self.interval):
                try:
                    self.poll()
                except Exception as exc:
                    _findings.internal_error("the watchdog", exc)
            self._stop.release()
        finally:
            internal_threads.discard(me)
            done.release()

    def poll(self) -> Optional[Finding]:
        """One check now; returns the new ``hang`` finding, if any (threads first)."""
        found = self._poll_tasks()
        stuck = [(ts, c) for ts, c in stuck_waits(self.timeout)
                 if (ts.uid, c) not in self._reported]
        if not stuck:
            return found
        self._reported.update((ts.uid, c) for ts, c in stuck)
        finding = build_hang(stuck, self.timeout)
        if _findings.record(finding):
            _findings.apply_policy(finding, settings.on_hang)
            return finding
        return found

    def _poll_tasks(self) -> Optional[Finding]:
        """asyncio tasks hung on a wait lockwise follows (``_aio_wait.hung_tasks``),
        once ``lockwise.aio`` is in use (looked up, not imported)."""
        aio_wait = sys.modules.get("lockwise._aio_wait")
        hung_tasks = getattr(aio_wait, "hung_tasks", None)  # None while being imported
        build = getattr(aio_wait, "build_task_hang", None)
        if hung_tasks is None or build is None:
            return None
        hung = hung_tasks(self.timeout, self._reported_tasks)
        if not hung:
            return None
        self._reported_tasks.update(key for _t, _l, _s, key in hung)
        finding: Finding = build(hung, self.timeout)
        if _findings.record(finding):
            _findings.apply_policy(finding, settings.on_hang)
            return finding
        return None


def report_unproven(threads: list[ThreadState], weak: list[Any], seconds: float) -> None:
    """Report a wait-for cycle that lockwise cannot prove, as a ``hang``.

    Called by a thread of the cycle (``_waitfor.unproven_hook``) when the
    cycle has lasted ``settings.unproven_after``. Never raises: each of the
    ``weak`` locks may still be released by another thread (it was taken by a
    bare ``acquire()``, or its owner has exited).
    """
    try:
        stuck = [(ts, ts.changes) for ts in threads if ts.alive and ts.waiting is not None]
        if not stuck:
            return
        finding = build_hang(stuck, seconds)
        refs = lock_refs(weak)
        why = ", ".join(f"{refs[id(lock)].name} ({refs[id(lock)].site})" for lock in weak)
        names = [state_name(ts) for ts, _c in stuck]
        exited = [ts for ts in threads if not ts.alive]
        who = (f"{names[0]} waits for a lock held by {exited[0].name}, which has exited"
               if exited else f"{', '.join(names)} wait for each other in a cycle")
        finding.summary = (f"{who} for {seconds:.1f}s; not raised, because another thread "
                           f"may still release {why}: taken by a bare acquire() (a hand-off)")
        finding.details["rule"] = "unproven-cycle"
        finding.details["may_be_released"] = [refs[id(lock)].to_dict() for lock in weak]
        finding.key = ("unproven", frozenset((ts.uid, c) for ts, c in stuck))
        finding.text = render_hang(finding)
    except Exception as exc:
        _findings.internal_error("reporting an unproven cycle", exc)
        return
    if _findings.record(finding):
        try:
            _findings.apply_policy(finding, settings.on_hang)  # "raise" acts as "log"
        except Exception:
            pass  # a warning filter set to "error": recorded, but never raised into a wait


_waitfor.unproven_hook = report_unproven


def settings_seconds(name: str, value: Any) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = float("nan")
    if not 0 < seconds < float("inf"):
        raise ValueError(f"lockwise.watchdog: {name}={value!r} is not valid; "
                         "expected a positive number of seconds")
    return seconds


_current: Optional[Watchdog] = None


def watchdog(timeout: Optional[float], interval: Optional[float] = None) -> Optional[Watchdog]:
    """Start the process-wide watchdog with ``timeout`` seconds, or stop it (None).

    Calling it again replaces the running watchdog (waits already reported
    may be reported again). Returns the running :class:`Watchdog`, or None.
    """
    global _current
    new = Watchdog(timeout, interval) if timeout is not None else None
    old, _current = _current, None
    if old is not None:
        old.stop()
    if new is not None:
        _current = new.start()
    return _current
