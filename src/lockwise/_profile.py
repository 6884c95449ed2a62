"""Contention profiling: which locks make threads wait, how long, and where.

Public API: :func:`lockwise.profile` returns a :class:`Profiler`; use it as a
context manager (``with lockwise.profile() as prof: ...``) or call
``start()``/``stop()``. Then ``prof.stats()`` (one JSON-ready dict per lock
class, sorted by total wait), ``prof.table()`` (a lock_stat-like text table),
``prof.collapsed()`` (waiting time as collapsed stacks, ``frame;frame value``
lines for flame-graph tools and speedscope) and ``prof.to_dict()`` (what the
JSON report stores under ``"profile"``).

What is measured, per lock class (the creation site, or the name given to
the lock): acquisitions, contentions (blocking acquires that found the lock
taken and had to wait), wait time total/max/mean/p99, hold time
total/max/mean, hand-offs (acquisitions by a thread other than the lock's
previous holder), the waiter sites (where the waiting acquires were made) and
the holder sites (where the holder had acquired the lock while others
waited). Clock: ``time.monotonic_ns``. A bounded log of holds and waits per
lock class (``events`` per class, the most recent ones) feeds the HTML
report's timeline.

How, and what it costs:

* Waits are timed in the contended slow path, through
  ``_primitives.wait_hook``: when profiling is off that is one global load
  on the slow path and nothing on the fast path (C or pure).
* Hold times and acquisition counts need a timestamp at every acquire and
  release, so a full profile (``sample=1``) swaps the ``acquire``,
  ``release``, ``__enter__`` and ``__exit__`` methods of ``Lock`` and
  ``RLock`` for Python wrappers while it runs, and restores them at
  ``stop()``; an RLock released for a Condition wait reports through
  ``_primitives.hold_hook``. Every acquire then runs a few
  microseconds of Python (see benchmarks/RESULTS.md).
* ``sample=N`` (N > 1) leaves the fast path alone: no hold times, no
  acquisition counts, no hand-offs. Every contention is counted, and each is
  timed with probability 1/N (a random draw: a 1-in-N counter aliases with
  periodic patterns, e.g. two locks whose contentions alternate) and then
  attributed to its sites and stack. A lock class's wait total (and its
  collapsed-stack values) is its measured sum times its contentions per
  timed one, an unbiased estimate, and says so (``"scaled": true``). Max,
  mean and p99 are those of the measured waits.
* Timed waits still in progress when the profile stops are counted up to
  that moment and marked (``"unfinished"``): a thread stuck at the end is
  the most interesting wait of all.

Limits: one profile at a time per process; a Condition created before the
profile started and used through its own ``acquire()``/``release()`` (bound
when it was created; ``with cond:`` is fine) is invisible to hold times;
only lockwise ``Lock``/``RLock`` are seen (locks created before ``install()``
and C-level locks are not); p99 comes from a uniform reservoir of at most
``RESERVOIR`` waits per class;
hand-offs are tracked per lock object by ``id()``, so a lock freed and a new
one allocated at the same address may count one spurious hand-off. Profile
data is per process (subprocesses are not merged).
"""

from __future__ import annotations

import _thread
import os
import random
import threading
import time
from collections import deque
from types import CodeType, FrameType

from . import _findings, _primitives, _waitfor
from ._sites import INTERNAL_FILES, OWN_FILES, Site, state_name
from ._state import ThreadState, _local, registered_thread

TYPE_CHECKING = False  # True for type checkers: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Any, Callable, Optional

_monotonic_ns = time.monotonic_ns
_get_ident = threading.get_ident

FORMAT = 1
#: Waits kept per lock class for the p99 (uniform reservoir sample).
RESERVOIR = 10_000
#: Holds and waits kept per lock class for the timeline (the most recent).
EVENTS = 2_000
#: Deepest stack recorded for one wait (the frames nearest the wait).
STACK_LIMIT = 64
#: Sites listed per lock class (waiters, holders).
TOP_SITES = 5

_Where = tuple[CodeType, int]


class _Class:
    """Counters of one lock class. Updated only under the collector's lock."""

    __slots__ = ("site", "type", "acquisitions", "contentions", "sampled", "wait_sum",
                 "wait_max", "reservoir", "hold_sum", "hold_max", "holds", "handoffs",
                 "waiters", "holders", "events", "unfinished")

    def __init__(self, site: Site, kind: str) -> None:
        self.site = site
        self.type = kind
        self.acquisitions = 0
        self.contentions = 0
        self.sampled = 0
        #: Measured waits still in progress when the profile stopped (counted
        #: up to that moment, in ``contentions``, ``sampled`` and the totals).
        self.unfinished = 0
        self.wait_sum = 0
        self.wait_max = 0
        self.reservoir: list[int] = []
        self.hold_sum = 0
        self.hold_max = 0
        self.holds = 0
        self.handoffs = 0
        #: waiter / holder site -> [measured waits, measured wait ns]
        self.waiters: dict[Optional[_Where], list[int]] = {}
        self.holders: dict[Optional[_Where], list[int]] = {}
        #: (kind "hold"/"wait", thread state, start ns, end ns)
        self.events: deque[tuple[str, Any, int, int]] = deque(maxlen=EVENTS)


class _Collector:
    """All data of one profile; the hooks write here while it is current."""

    def __init__(self, sample: int, holds: bool) -> None:
        self.sample = sample
        self.holds = holds
        # The interpreter's own re-entrant lock: never instrumented, held only
        # for counter updates, so a finalizer or signal handler that takes a
        # lockwise lock in the middle of one re-enters it instead of waiting.
        self.mu = _thread.RLock()
        self.classes: dict[Site, _Class] = {}
        #: id(lock) -> [hold start ns (0: not held), holder state, previous holder]
        self.instances: dict[int, list[Any]] = {}
        #: (stack of (code, line), lock site) -> measured wait ns
        self.stacks: dict[tuple[tuple[_Where, ...], Site], int] = {}
        self.random = random.Random(0x10C4)
        #: ``sample`` > 1: a contention is timed when this draw is below 1/sample.
        #: A random draw, not a 1-in-N counter: a counter shared by all locks
        #: aliases with any periodic pattern (two locks whose contentions
        #: alternate would be measured as one at double and one at zero).
        self.draw = random.Random(0x5A3E).random
        #: Timed waits in progress: thread state -> (lock, holder site, stack,
        #: start). Those still waiting when the profile stops are counted then.
        self.inflight: dict[Any, tuple[Any, Optional[_Where], tuple[_Where, ...], int]] = {}
        self.start_ns = _monotonic_ns()
        self.end_ns = 0
        self.failed = False
        #: ids of the thread states whose ``name`` was refreshed from the
        #: running thread (a state is made before ``threading`` lists its thread).
        self.named: set[int] = set()

    def name(self, ts: Any) -> None:
        """Keep ``ts.name`` right for the timeline (once per thread, while it runs)."""
        if id(ts) in self.named:
            return
        thread = registered_thread(ts.ident)
        if thread is not None:
            ts.name = thread.name
            self.named.add(id(ts))

    def cls(self, lock: Any) -> _Class:
        site: Site = lock._site
        entry = self.classes.get(site)
        if entry is None:
            kind = "RLock" if hasattr(lock, "_count") else "Lock"
            entry = self.classes.setdefault(site, _Class(site, kind))
        return entry

    def error(self, where: str, exc: BaseException) -> None:
        if not self.failed:
            self.failed = True
            _findings.internal_error(where, exc)

    # ---------------------------------------------------------- recording

    def acquired(self, lock: Any) -> None:
        """``lock`` was just acquired by the calling thread (full mode)."""
        try:
            now = _monotonic_ns()
            ts = _local.ts
            with self.mu:
                entry = self.cls(lock)
                entry.acquisitions += 1
                rec = self.instances.get(id(lock))
                if rec is None:
                    self.instances[id(lock)] = [now, ts, ts]
                else:
                    if rec[2] is not ts:
                        entry.handoffs += 1
                    rec[0] = now
                    rec[1] = ts
                    rec[2] = ts
        except Exception as exc:
            self.error("the profiler (acquire)", exc)

    def releasing(self, lock: Any) -> None:
        """``lock`` is about to be released (full mode)."""
        try:
            rec = self.instances.get(id(lock))
            if rec is None or not rec[0]:
                return
            now = _monotonic_ns()
            with self.mu:
                start = rec[0]
                if not start:
                    return
                rec[0] = 0
                held = now - start
                entry = self.cls(lock)
                entry.holds += 1
                entry.hold_sum += held
                if held > entry.hold_max:
                    entry.hold_max = held
                entry.events.append(("hold", rec[1], start, now))
                self.name(rec[1])
        except Exception as exc:
            self.error("the profiler (release)", exc)

    def waited(self, lock: Any, ts: ThreadState, holder_acq: Optional[_Where],
               stack: tuple[_Where, ...], start: int, end: int,
               unfinished: bool = False) -> None:
        """A measured contended wait on ``lock`` by ``ts`` from ``start`` to ``end``."""
        try:
            waited = end - start
            where = stack[-1] if stack else None
            with self.mu:
                entry = self.cls(lock)
                entry.contentions += 1
                entry.sampled += 1
                if unfinished:
                    entry.unfinished += 1
                entry.wait_sum += waited
                if waited > entry.wait_max:
                    entry.wait_max = waited
                res = entry.reservoir
                if len(res) < RESERVOIR:
                    res.append(waited)
                else:
                    j = self.random.randrange(entry.sampled)
                    if j < RESERVOIR:
                        res[j] = waited
                for table, key in ((entry.waiters, where), (entry.holders, holder_acq)):
                    cell = table.get(key)
                    if cell is None:
                        table[key] = [1, waited]
                    else:
                        cell[0] += 1
                        cell[1] += waited
                skey = (stack, entry.site)
                self.stacks[skey] = self.stacks.get(skey, 0) + waited
                entry.events.append(("wait", ts, start, end))
                self.name(ts)
        except Exception as exc:
            self.error("the profiler (wait)", exc)

    def hold_event(self, lock: Any, held: bool) -> None:
        """``_primitives.hold_hook``: an RLock left for / taken back after a Condition wait."""
        if held:
            self.acquired(lock)
        else:
            self.releasing(lock)

    def contended(self, lock: Any) -> None:
        """A contention that is not sampled: counted only."""
        try:
            with self.mu:
                self.cls(lock).contentions += 1
        except Exception as exc:
            self.error("the profiler (wait)", exc)

    def stopped(self, end: int) -> None:
        """Count the timed waits still in progress, up to ``end``, as unfinished."""
        with self.mu:
            pending = list(self.inflight.items())
            self.inflight.clear()
        for ts, (lock, holder_acq, stack, start) in pending:
            self.waited(lock, ts, holder_acq, stack, start, max(start, end), unfinished=True)

    def after_fork(self) -> None:
        self.mu = _thread.RLock()
        self.inflight.clear()


_current: Optional[_Collector] = None
_wait_lock = _waitfor.wait_lock


def _user_stack(frame: Optional[FrameType]) -> tuple[_Where, ...]:
    """(code, line) of the user frames from the outermost to ``frame``.

    A wait with no user frame at all (a new thread's bootstrap setting
    ``Thread._started`` while its starter holds the Event's lock) keeps
    threading's frames instead, so it is still attributed to something.
    """
    out = _frames(frame, INTERNAL_FILES)
    return out if out else _frames(frame, OWN_FILES)


def _frames(frame: Optional[FrameType], skip: set[str]) -> tuple[_Where, ...]:
    out: list[_Where] = []
    while frame is not None and len(out) < STACK_LIMIT:
        code = frame.f_code
        if code.co_filename not in skip:
            out.append((code, frame.f_lineno))
        frame = frame.f_back
    out.reverse()
    return tuple(out)


def _wait_hook(ts: ThreadState, lock: Any, timeout: float, frame: Optional[FrameType]) -> bool:
    """``_primitives.wait_hook`` while profiling: time the wait if there is one."""
    coll = _current
    if coll is None:
        return _wait_lock(ts, lock, timeout)
    if lock._inner.acquire(False):
        return True  # free after all (a timed acquire, or released meanwhile): no wait
    if coll.sample > 1 and coll.draw() * coll.sample >= 1.0:
        coll.contended(lock)
        return _wait_lock(ts, lock, timeout)
    holder_acq = lock._acq if lock._owner is not None else None
    stack = _user_stack(frame)
    start = _monotonic_ns()
    inflight = coll.inflight
    inflight[ts] = (lock, holder_acq, stack, start)
    try:
        return _wait_lock(ts, lock, timeout)
    finally:
        # Not recorded here if the profile stopped meanwhile (``stopped`` did).
        if inflight.pop(ts, None) is not None:
            coll.waited(lock, ts, holder_acq, stack, start, _monotonic_ns())


# ------------------------------------------------------ method swapping

_LOCK_METHODS = ("acquire", "release", "__enter__", "__exit__")


def _lock_methods(cls: type, coll: _Collector) -> dict[str, Any]:
    orig_acquire: Callable[..., bool] = cls.acquire  # type: ignore[attr-defined]
    # Through the class's own __enter__: it records that the lock is held in a
    # with block, which the deadlock rules rely on (see _waitfor.release_evidence).
    orig_enter: Callable[[Any], bool] = cls.__enter__  # type: ignore[attr-defined]
    orig_release: Callable[[Any], None] = cls.release  # type: ignore[attr-defined]
    acquired = coll.acquired
    releasing = coll.releasing

    def acquire(self: Any, blocking: bool = True, timeout: float = -1) -> bool:
        if orig_acquire(self, blocking, timeout):
            acquired(self)
            return True
        return False

    def __enter__(self: Any) -> bool:
        if orig_enter(self):
            acquired(self)
            return True
        return False

    def release(self: Any) -> None:
        releasing(self)
        orig_release(self)

    def __exit__(self: Any, *args: object) -> None:
        releasing(self)
        orig_release(self)

    return {"acquire": acquire, "release": release, "__enter__": __enter__,
            "__exit__": __exit__}


def _rlock_methods(cls: type, coll: _Collector) -> dict[str, Any]:
    orig_acquire: Callable[..., bool] = cls.acquire  # type: ignore[attr-defined]
    orig_release: Callable[[Any], None] = cls.release  # type: ignore[attr-defined]
    acquired = coll.acquired
    releasing = coll.releasing

    def _mine(lock: Any) -> bool:
        try:
            return lock._owner is _local.ts
        except AttributeError:
            return False

    def acquire(self: Any, blocking: bool = True, timeout: float = -1) -> bool:
        if orig_acquire(self, blocking, timeout):
            if self._count == 1:
                acquired(self)
            return True
        return False

    def __enter__(self: Any) -> bool:
        if orig_acquire(self, True, -1):
            if self._count == 1:
                acquired(self)
            return True
        return False

    def release(self: Any) -> None:
        if self._count == 1 and _mine(self):
            releasing(self)
        orig_release(self)

    def __exit__(self: Any, *args: object) -> None:
        if self._count == 1 and _mine(self):
            releasing(self)
        orig_release(self)

    return {"acquire": acquire, "release": release, "__enter__": __enter__,
            "__exit__": __exit__}


def _classes() -> list[tuple[type, bool]]:
    """(class, is_rlock) for every lockwise lock class in use (pure and C)."""
    out: list[tuple[type, bool]] = []
    for cls, is_rlock in ((_primitives.Lock, False), (_primitives.RLock, True),
                          (_primitives.PureLock, False), (_primitives.PureRLock, True)):
        if all(c is not cls for c, _r in out):
            out.append((cls, is_rlock))
    return out


_saved: list[tuple[type, str, Any]] = []


def _swap_in(coll: _Collector) -> None:
    for cls, is_rlock in _classes():
        methods = (_rlock_methods if is_rlock else _lock_methods)(cls, coll)
        for name, func in methods.items():
            func.__qualname__ = f"{cls.__qualname__}.{name}"
            _primitives.swap_method(_saved, cls, name, func)


def _swap_out() -> None:
    _primitives.restore_methods(_saved)


# ----------------------------------------------------------------- API


class Profiler:
    """One contention profile. See the module docstring for what it measures.

    ``sample`` (default 1: everything, including hold times) > 1 times one in
    ``sample`` contentions only and scales the wait totals by it.
    """

    def __init__(self, sample: int = 1) -> None:
        if isinstance(sample, bool) or not isinstance(sample, int) or sample < 1:
            raise ValueError(f"lockwise.profile: sample={sample!r} is not valid; expected "
                             "a positive integer (1 records every contention)")
        self.sample = sample
        self._coll: Optional[_Collector] = None

    @property
    def running(self) -> bool:
        return self._coll is not None and self._coll is _current

    def start(self) -> Profiler:
        """Start collecting (a fresh profile). RuntimeError if one is running."""
        global _current
        if _current is not None:
            raise RuntimeError("lockwise.profile: a profile is already running in this "
                               "process; stop it first")
        coll = _Collector(self.sample, holds=self.sample == 1)
        self._coll = coll
        if coll.holds:
            _swap_in(coll)
            _primitives.hold_hook = coll.hold_event
        _current = coll
        _primitives.set_wait_hook(_wait_hook)
        return self

    def stop(self) -> Profiler:
        """Stop collecting; the data stays readable. Does nothing if not running."""
        global _current
        coll = self._coll
        if coll is None or coll is not _current:
            return self
        _primitives.set_wait_hook(None)
        _primitives.hold_hook = None
        _swap_out()
        _current = None
        coll.end_ns = _monotonic_ns()
        coll.stopped(coll.end_ns)
        return self

    def __enter__(self) -> Profiler:
        return self.start()

    def __exit__(self, *args: object) -> None:
        self.stop()

    # ---------------------------------------------------------- results

    def to_dict(self, events: bool = True) -> dict[str, Any]:
        """The profile as JSON-ready data (what the JSON report keeps under "profile")."""
        coll = self._coll
        if coll is None:
            return empty_dict(self.sample)
        with coll.mu:
            # A copy first: a finalizer run by an allocation below may record
            # a new class in this thread (the RLock lets it in).
            pairs = [(_class_dict(c, coll), c) for c in list(coll.classes.values())]
            stacks = list(coll.stacks.items())
            logs = [list(c.events) for _d, c in pairs] if events else []
        end = coll.end_ns or _monotonic_ns()
        order = sorted(range(len(pairs)), key=lambda i: (
            -pairs[i][0]["wait_total_ns"], -pairs[i][0]["contentions"],
            -(pairs[i][0]["acquisitions"] or 0), pairs[i][0]["name"]))
        locks = [pairs[i][0] for i in order]
        scale = coll.sample
        factors = {c.site: _factor(c) for _d, c in pairs}
        collapsed = sorted(((_collapse(stack, site), round(total * factors.get(site, scale)))
                            for (stack, site), total in stacks), key=lambda x: -x[1])
        data: dict[str, Any] = {
            "format": FORMAT, "clock": "monotonic_ns", "sample": scale, "scaled": scale > 1,
            "holds": coll.holds, "duration_ns": end - coll.start_ns, "pid": os.getpid(),
            "locks": locks,
            "collapsed": [f"{line} {value}" for line, value in collapsed],
        }
        if events:
            busiest = [(pairs[i][0], logs[i]) for i in order if logs[i]][:TIMELINE_LOCKS]
            data["timeline"] = _timeline(coll.start_ns, end, busiest)
        return data

    def stats(self) -> list[dict[str, Any]]:
        """One dict per lock class, most total wait first (see ``to_dict``)."""
        locks: list[dict[str, Any]] = self.to_dict(events=False)["locks"]
        return locks

    def table(self, limit: int = 20) -> str:
        """The lock_stat-like text table (``limit`` lock classes at most)."""
        from ._report import render_profile

        return render_profile(self.to_dict(events=False), limit=limit)

    def collapsed(self) -> str:
        """Waiting time as collapsed stacks: ``frame;frame;[lock name] ns`` per line."""
        lines: list[str] = self.to_dict(events=False)["collapsed"]
        return "".join(line + "\n" for line in lines)


def profile(sample: int = 1) -> Profiler:
    """A contention profiler; ``with lockwise.profile() as prof:`` profiles a block.

    ``sample=N`` times only one in N contentions (low overhead, no hold
    times; totals scaled by N). Read the results with ``prof.stats()``,
    ``prof.table()``, ``prof.collapsed()`` or ``prof.to_dict()``.
    """
    return Profiler(sample)


def empty_dict(sample: int = 1) -> dict[str, Any]:
    return {"format": FORMAT, "clock": "monotonic_ns", "sample": sample, "scaled": sample > 1,
            "holds": sample == 1, "duration_ns": 0, "pid": os.getpid(), "locks": [],
            "collapsed": []}


# -------------------------------------------------------------- export


def _where(where: Optional[_Where]) -> dict[str, Any]:
    if where is None:
        return {"site": "?", "function": "?", "code": ""}
    from ._sites import frame_info

    info = frame_info(where[0], where[1])
    return {"site": f"{info.filename}:{info.lineno}", "function": info.function,
            "code": info.line}


def _top(table: dict[Optional[_Where], list[int]], scale: float) -> list[dict[str, Any]]:
    rows = sorted(table.items(), key=lambda kv: -kv[1][1])[:TOP_SITES]
    return [dict(_where(where), count=cell[0], wait_ns=round(cell[1] * scale))
            for where, cell in rows]


def _factor(c: _Class) -> float:
    """What a lock class's measured wait is multiplied by: its contentions per
    timed one (1 in full mode). Each contention is timed with the same
    probability, so the mean of the timed waits estimates the mean of all,
    without bias; times the exact count of contentions, it estimates the total."""
    return c.contentions / c.sampled if c.sampled else 0.0


def _p99(values: list[int]) -> int:
    if not values:
        return 0
    ordered = sorted(values)
    index = max(0, -(-len(ordered) * 99 // 100) - 1)  # nearest rank
    return ordered[index]


def _class_dict(c: _Class, coll: _Collector) -> dict[str, Any]:
    scale = _factor(c)
    holds = coll.holds
    return {
        "name": c.site.label, "site": str(c.site), "type": c.type,
        "acquisitions": c.acquisitions if holds else None,
        "contentions": c.contentions, "sampled": c.sampled, "unfinished": c.unfinished,
        "wait_total_ns": round(c.wait_sum * scale), "wait_max_ns": c.wait_max,
        "wait_mean_ns": c.wait_sum // c.sampled if c.sampled else 0,
        "wait_p99_ns": _p99(c.reservoir),
        "hold_total_ns": c.hold_sum if holds else None,
        "hold_max_ns": c.hold_max if holds else None,
        "hold_mean_ns": (c.hold_sum // c.holds if c.holds else 0) if holds else None,
        "handoffs": c.handoffs if holds else None,
        "waiters": _top(c.waiters, scale), "holders": _top(c.holders, scale),
    }


def _frame_label(where: _Where) -> str:
    code, line = where
    text = f"{code.co_name} ({os.path.basename(code.co_filename)}:{line})"
    return _clean(text)


def _clean(text: str) -> str:
    """One collapsed-stack frame: no ';' (the separator) and no line breaks."""
    return text.replace(";", ":").replace("\n", " ").replace("\r", " ")


def _collapse(stack: tuple[_Where, ...], site: Site) -> str:
    frames = [_frame_label(w) for w in stack]
    frames.append(_clean(f"[wait {site.label}]"))
    return ";".join(frames)


def _thread_label(ts: Any) -> str:
    if ts is None:
        return "?"
    return state_name(ts)


#: Lock classes drawn in the timeline (the most waited-for).
TIMELINE_LOCKS = 5


def _timeline(base: int, end: int,
              busiest: list[tuple[dict[str, Any], list[tuple[str, Any, int, int]]]]
              ) -> dict[str, Any]:
    """Holds and waits of the busiest lock classes, in ns since the profile start."""
    out: list[dict[str, Any]] = []
    for d, events in busiest:
        threads: dict[int, dict[str, Any]] = {}
        for kind, ts, start, stop in events:
            row = threads.get(id(ts))
            if row is None:
                row = threads[id(ts)] = {"thread": _thread_label(ts), "events": []}
            row["events"].append([kind, start - base, stop - base])
        out.append({"name": d["name"], "site": d["site"], "threads": list(threads.values()),
                    "truncated": len(events) >= EVENTS})
    return {"start_ns": 0, "end_ns": end - base, "locks": out}


def _after_fork_in_child() -> None:
    coll = _current
    if coll is not None:
        coll.after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


Profiler.__module__ = "lockwise"
