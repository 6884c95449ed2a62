"""The directed scheduler of ``lockwise confirm``, inside the program it steers.

Algorithm (after DeadlockFuzzer, PLDI 2009). A *plan* lists pause points, one
per edge of a lock-order cycle: "about to acquire a lock of site W while
holding a lock of site H, at line F:L". Every blocking, untimed acquire made
while holding other locks is compared with the plan; a match pauses the
thread *before* it asks for the lock, with the first lock of its edge held.
Each new pause looks for a cycle through actual objects among the paused
threads (T1 wants the lock T2 holds, T2 wants the one T1 holds ...); when one
closes, its threads are let go together, they block on each other, and
lockwise's own detector raises ``DeadlockError`` as it would in any run. The
scheduler never decides that a deadlock happened: ``lockwise confirm`` reads
the run's JSON report for that.

Never hangs. Every pause is bounded (``pause_timeout``); when every live
thread is paused or blocked (without a timeout, on something lockwise sees)
on three checks 10 ms apart, one paused thread is let go, chosen from the
seed among the paused threads in their order of arrival. After
``max_timeouts`` pauses ended by their bound, the scheduler stops pausing for
the rest of the run. Each release is logged with what the other threads were
doing (blocked in a join, on an Event, a queue, a lock some paused thread
holds): ``_confirm`` derives "not confirmed" reasons from it.

Cost. Nothing when not started: ``start()`` swaps the ``acquire`` and
``__enter__`` methods of lockwise's Lock and RLock classes (as a full
profile does) in the process it steers only; the core never imports this
module. Identification uses lock creation sites and acquire lines (strings
that are the same in every run of one program), never object ids.

Plan and log are files named by ``LOCKWISE_SCHEDULE`` (a JSON plan) and the
plan's ``"log"`` (JSON lines, appended): see :func:`start_from_env`.
"""

from __future__ import annotations

import _thread
import json
import os
import random
import sys
import threading
import time

from . import _findings, _primitives
from ._describe import kind_of
from ._sites import user_frame
from ._state import _local, blocked, internal_threads, new_state, states
from ._waitfor import CondWaiter, JoinWait

TYPE_CHECKING = False  # True for type checkers: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Any, Callable, Optional

ENV_PLAN = "LOCKWISE_SCHEDULE"
#: Checks of "every thread paused or blocked" needed before a release.
_STUCK_CHECKS = 3
_TICK = 0.01


class Point:
    """One pause point: holding a lock of site ``held``, acquiring one of site
    ``wants`` at source line ``at`` ("file:line", or None for any line)."""

    __slots__ = ("held", "wants", "at")

    def __init__(self, held: str, wants: str, at: Optional[str]) -> None:
        self.held = held
        self.wants = wants
        self.at = at

    def to_dict(self) -> dict[str, Any]:
        return {"held": self.held, "wants": self.wants, "at": self.at}


class _Paused:
    __slots__ = ("ts", "lock", "point", "seq", "gate", "name", "why")

    def __init__(self, ts: Any, lock: Any, point: int, seq: int) -> None:
        self.ts = ts
        self.lock = lock
        self.point = point
        self.seq = seq
        self.gate = _thread.allocate_lock()
        self.gate.acquire()
        self.name = threading.current_thread().name
        self.why = ""


class Scheduler:
    """The directed scheduler of one run (see the module docstring)."""

    def __init__(self, points: list[Point], seed: int, pause_timeout: float = 2.0,
                 max_timeouts: int = 3, log: Optional[str] = None) -> None:
        self.points = points
        self.seed = seed
        self.rng = random.Random(seed)
        self.pause_timeout = pause_timeout
        self.max_timeouts = max_timeouts
        self.log_path = log
        self.paused: list[_Paused] = []
        self.seq = 0
        self.timeouts = 0
        self.active = True
        self._mu = _thread.RLock()
        self._log_mu = _thread.allocate_lock()
        self._t0 = time.monotonic()

    # ---------------------------------------------------------------- hook

    def before(self, lock: Any) -> None:
        """Called before a blocking, untimed acquire of ``lock``; may pause."""
        if not self.active:
            return
        try:
            ts = _local.ts
        except AttributeError:
            ts = new_state()
        if ts.quiet or not ts.held or lock._owner is ts:
            return
        try:
            ts.quiet += 1  # our own bookkeeping records no lock order
            try:
                index = self._match(ts, lock)
            finally:
                ts.quiet -= 1
            if index is not None:
                self._pause(ts, lock, index)
        except Exception as exc:
            _findings.internal_error("the confirm scheduler", exc)

    def _match(self, ts: Any, lock: Any) -> Optional[int]:
        wants = str(lock._site)
        held = {str(h._site) for h in ts.held if h is not lock}
        at: Optional[str] = None
        for i, p in enumerate(self.points):
            if p.wants != wants or p.held not in held:
                continue
            if p.at is not None:
                if at is None:
                    frame = user_frame(sys._getframe(2))
                    at = (f"{frame.f_code.co_filename}:{frame.f_lineno}"
                          if frame is not None else "")
                if p.at != at:
                    continue
            return i
        return None

    # --------------------------------------------------------------- pause

    def _pause(self, ts: Any, lock: Any, index: int) -> None:
        with self._mu:
            if not self.active:
                return
            self.seq += 1
            me = _Paused(ts, lock, index, self.seq)
            self.paused.append(me)
            self._log("pause", me)
            cycle = self._cycle_from(me)
            if cycle is not None:
                self._log_event({"event": "cycle", "threads": [p.name for p in cycle],
                                 "points": [p.point for p in cycle]})
                for p in cycle:
                    self._release(p, "cycle")
                return
        deadline = time.monotonic() + self.pause_timeout
        stuck = 0
        while not me.gate.acquire(True, _TICK):
            with self._mu:
                if me not in self.paused:
                    continue  # released between the timeout and here
                if time.monotonic() >= deadline:
                    self.timeouts += 1
                    me.why = self._others(me)
                    self._release(me, "timeout")
                    if self.timeouts >= self.max_timeouts:
                        self._stop("too many pauses ended by their bound")
                    continue
                if self._all_stuck():
                    stuck += 1
                    if stuck >= _STUCK_CHECKS:
                        stuck = 0
                        order = sorted(self.paused, key=lambda p: p.seq)
                        chosen = order[self.rng.randrange(len(order))]
                        chosen.why = self._others(chosen)
                        self._release(chosen, "stuck")
                else:
                    stuck = 0

    def _release(self, p: _Paused, how: str) -> None:
        if p in self.paused:
            self.paused.remove(p)
            if how != "cycle":
                self._log("release-" + how, p)
            p.gate.release()

    def _stop(self, why: str) -> None:
        self.active = False
        self._log_event({"event": "stop", "why": why})
        for p in list(self.paused):
            self._release(p, "stop")

    def _cycle_from(self, me: _Paused) -> Optional[list[_Paused]]:
        """The paused threads that ``me`` closes a cycle with, or None."""
        by_ts = {p.ts: p for p in self.paused}
        chain = [me]
        cur = me
        while True:
            owner = cur.lock._owner
            if owner is None:
                return None
            nxt = by_ts.get(owner)
            if nxt is None:
                return None
            if nxt is me:
                return chain
            if nxt in chain:
                return None
            chain.append(nxt)
            cur = nxt

    def _all_stuck(self) -> bool:
        """Every live thread is paused here or blocked without a timeout."""
        paused = {p.ts for p in self.paused}
        for ident in list(sys._current_frames()):
            if ident in internal_threads:
                continue
            ts = states.get(ident)
            if ts is None or (ts not in paused and ts not in blocked):
                return False
        return True

    def _others(self, me: _Paused) -> str:
        """What the other threads do while ``me`` is paused (for the reason)."""
        paused = {p.ts: p for p in self.paused}
        parts = []
        for thread in threading.enumerate():
            ident = thread.ident
            if ident is None or ident in internal_threads:
                continue
            ts = states.get(ident)
            if ts is None or ts is me.ts:
                continue
            if ts in paused:
                parts.append(f"{thread.name}=paused")
                continue
            res = ts.waiting
            if res is None:
                parts.append(f"{thread.name}=running")
            elif isinstance(res, JoinWait):
                joined = res.thread
                tag = "join-paused" if joined.ident == me.ts.ident else "join"
                parts.append(f"{thread.name}={tag}:{joined.name}")
            elif isinstance(res, CondWaiter):
                parts.append(f"{thread.name}=notify:{kind_of(res.cond)}")
            else:
                owner = getattr(res, "_owner", None)
                mine = owner is not None and (owner is me.ts or owner in paused)
                parts.append(f"{thread.name}={'lock-paused' if mine else 'lock'}:"
                             f"{getattr(res, '_site', '?')}")
        return " ".join(parts)

    # ----------------------------------------------------------------- log

    def _log(self, event: str, p: _Paused) -> None:
        point = self.points[p.point]
        entry = {"event": event, "thread": p.name, "point": p.point,
                 "held": point.held, "wants": point.wants, "at": point.at, "seq": p.seq}
        if p.why:
            entry["others"] = p.why
        self._log_event(entry)

    def _log_event(self, entry: dict[str, Any]) -> None:
        if self.log_path is None:
            return
        entry["t"] = round(time.monotonic() - self._t0, 4)
        entry["pid"] = os.getpid()
        line = json.dumps(entry) + "\n"
        with self._log_mu:
            try:
                fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, line.encode())
                finally:
                    os.close(fd)
            except OSError:
                pass


# ------------------------------------------------------------ installing

_active: Optional[Scheduler] = None
_saved: list[tuple[type, str, Any]] = []


def _wrap_acquire(orig: Callable[..., bool]) -> Callable[..., bool]:
    def acquire(self: Any, blocking: bool = True, timeout: float = -1) -> bool:
        sched = _active
        if sched is not None and blocking and timeout == -1:
            sched.before(self)
        return orig(self, blocking, timeout)
    return acquire


def _wrap_enter(orig: Callable[[Any], bool]) -> Callable[[Any], bool]:
    def __enter__(self: Any) -> bool:
        sched = _active
        if sched is not None:
            sched.before(self)
        return orig(self)
    return __enter__


def _classes() -> list[type]:
    out: list[type] = []
    for cls in (_primitives.Lock, _primitives.RLock, _primitives.PureLock,
                _primitives.PureRLock):
        if cls not in out:
            out.append(cls)
    return out


def start(scheduler: Scheduler) -> None:
    """Steer this process with ``scheduler`` from now on."""
    global _active
    if _active is None and not _saved:
        for cls in _classes():
            for name, wrap in (("acquire", _wrap_acquire), ("__enter__", _wrap_enter)):
                func = wrap(getattr(cls, name))
                func.__qualname__ = f"{cls.__qualname__}.{name}"
                _primitives.swap_method(_saved, cls, name, func)
    _active = scheduler


def stop() -> None:
    """Stop steering; paused threads go on."""
    global _active
    sched = _active
    _active = None
    if sched is not None:
        with sched._mu:
            sched.active = False
            for p in list(sched.paused):
                sched._release(p, "stop")
    _primitives.restore_methods(_saved)


def plan_from_dict(data: dict[str, Any]) -> Scheduler:
    points = [Point(str(p["held"]), str(p["wants"]),
                    None if p.get("at") is None else str(p["at"]))
              for p in data["points"]]
    return Scheduler(points, int(data.get("seed", 0)),
                     float(data.get("pause_timeout", 2.0)),
                     int(data.get("max_timeouts", 3)),
                     None if data.get("log") is None else str(data["log"]))


def start_from_env() -> None:
    """Start the scheduler named by ``LOCKWISE_SCHEDULE`` (a plan file), if set.

    Only the process that reads the plan first steers: the variable is
    removed, so the program's subprocesses run unsteered. Errors are reported,
    never raised."""
    path = os.environ.pop(ENV_PLAN, None)
    if not path:
        return
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        start(plan_from_dict(data))
    except Exception as exc:
        _findings.internal_error("the confirm scheduler (reading its plan)", exc)
