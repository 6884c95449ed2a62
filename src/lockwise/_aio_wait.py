"""Tasks: their bookkeeping, the task wait-for relation and its deadlock check.

See :mod:`lockwise.aio` for the algorithm. Everything here runs on the event
loop's thread, between two steps of tasks, so the relation cannot change while
it is read: no locking is needed, and a check is exact for the moment it runs.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from types import CodeType, FrameType

from . import _findings
from ._config import settings
from ._describe import acquired_at, lock_refs
from ._errors import DeadlockError
from ._findings import Finding, FrameInfo, StackInfo
from ._sites import INTERNAL_FILES, frame_info
from ._state import new_uid

TYPE_CHECKING = False  # True for type checkers: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Any, Callable, Optional

_get_running_loop = asyncio.events._get_running_loop
_current_task: Callable[..., Any] = asyncio.current_task
_Task: Any = asyncio.Task
_GatheringFuture: Any = getattr(asyncio.tasks, "_GatheringFuture", None)

# asyncio's own frames are not the user's: hide them from sites and stacks.
_ASYNCIO_DIR = os.path.dirname(os.path.abspath(asyncio.__file__))
for _name in os.listdir(_ASYNCIO_DIR):
    if _name.endswith(".py"):
        INTERNAL_FILES.add(os.path.join(_ASYNCIO_DIR, _name))
        INTERNAL_FILES.add(os.path.normcase(os.path.join(_ASYNCIO_DIR, _name)))

_CO_ASYNC = 0x80 | 0x100 | 0x200  # CO_COROUTINE | CO_ITERABLE_COROUTINE | CO_ASYNC_GENERATOR


class TaskState:
    """Bookkeeping of one task: the locks it holds and the lock it waits for.

    Written only by the task itself (and by ``release`` from another task, which
    drops the lock from ``held``), always on the loop's thread.
    """

    __slots__ = ("task", "ident", "uid", "held", "waiting", "quiet", "__weakref__")

    def __init__(self, task: Any) -> None:
        self.task = task
        #: A number that identifies the task in the lock-order graph.
        self.ident = id(task)
        #: Unique for the process's lifetime (ids of dead tasks are reused).
        self.uid = new_uid()
        #: asyncio locks held, in acquisition order (semaphores excluded).
        self.held: list[Any] = []
        #: The lockwise asyncio lock or semaphore this task waits for, if any.
        self.waiting: Any = None
        #: While > 0, lockwise itself is reporting: no order edges.
        self.quiet = 0

    def display_name(self) -> str:
        return task_name(self.task)

    def __repr__(self) -> str:
        return f"<TaskState {self.display_name()} held={len(self.held)}>"


#: The state of every task that holds or waits for a lockwise asyncio lock.
states: dict[Any, TaskState] = {}


def _forget(task: Any) -> None:
    states.pop(task, None)


def state_for(task: Any) -> TaskState:
    """The state of ``task``, created (and dropped when the task ends) on first use."""
    ts = states.get(task)
    if ts is None:
        ts = states[task] = TaskState(task)
        try:
            task.add_done_callback(_forget)
        except Exception:  # not a real Task: keep the state, it costs little
            pass
    return ts


def current_task() -> Any:
    """The running task, or None outside one (no running loop, or a bare coroutine)."""
    loop = _get_running_loop()
    return None if loop is None else _current_task(loop)


def task_name(task: Any) -> str:
    if task is None:
        return "<no task>"
    get_name = getattr(task, "get_name", None)
    return str(get_name()) if get_name is not None else repr(task)


# ---------------------------------------------------------------- stacks


def coro_frames(task: Any) -> list[FrameType]:
    """Frames of a task's coroutine chain, outermost first (suspended tasks)."""
    frames: list[FrameType] = []
    obj = getattr(task, "_coro", None) or getattr(task, "get_coro", lambda: None)()
    for _ in range(100):
        if obj is None:
            break
        frame = (getattr(obj, "cr_frame", None) or getattr(obj, "gi_frame", None)
                 or getattr(obj, "ag_frame", None))
        if frame is None:
            break
        frames.append(frame)
        obj = (getattr(obj, "cr_await", None) or getattr(obj, "gi_yieldfrom", None)
               or getattr(obj, "ag_await", None))
    return frames


def task_stack(task: Any) -> list[FrameInfo]:
    """The user frames of a task, outermost first.

    The running task's stack is read from the live frames; a suspended task's
    from its coroutine chain (``cr_await``).
    """
    if task is not None and task is current_task():
        out: list[FrameInfo] = []
        f: Optional[FrameType] = sys._getframe(1)
        while f is not None and len(out) < 40:
            if f.f_code.co_filename not in INTERNAL_FILES:
                out.append(frame_info(f.f_code, f.f_lineno))
            f = f.f_back
        out.reverse()
        return out
    return [frame_info(f.f_code, f.f_lineno) for f in coro_frames(task)
            if f.f_code.co_filename not in INTERNAL_FILES]


def task_holding(loop: Any, code: CodeType) -> Any:
    """A suspended task of ``loop`` whose coroutine chain is running ``code``."""
    try:
        tasks = asyncio.all_tasks(loop)
    except Exception:
        return None
    for task in tasks:
        for frame in coro_frames(task):
            if frame.f_code is code:
                return task
    return None


# ---------------------------------------------------------------- wait-for


def lock_wait(task: Any) -> Any:
    """The lockwise lock/semaphore ``task`` is queued on now, or None (validated)."""
    ts = states.get(task)
    if ts is None or ts.waiting is None:
        return None
    fut = getattr(task, "_fut_waiter", None)
    if fut is None or fut.done():
        return None
    waiters = ts.waiting._waiters
    if waiters is None or not any(w is fut for w in waiters):
        return None
    return ts.waiting


# A wait: ("all", succ) ends only if one of succ ends (dead when all are dead);
# ("any", succ) needs every successor (dead when any one is dead).
if TYPE_CHECKING:
    Wait = tuple[str, list[Any]]


def wait_of(task: Any, assumed: Optional[dict[Any, Any]] = None) -> Optional[Wait]:
    """What ``task`` waits for, if lockwise knows it can end only through tasks.

    None means "can run or may be woken by something lockwise does not see".
    ``assumed`` maps a task that is about to queue on a lock to that lock.
    """
    if task.done():
        return None
    lock = assumed.get(task) if assumed else None
    fut = getattr(task, "_fut_waiter", None)
    if lock is None:
        if fut is None or fut.done():
            return None
        lock = lock_wait(task)
    if lock is not None:
        if lock._site.signal or not lock._contended():
            return None  # released by other tasks before: a signal, anyone may release
        owners = lock._holder_tasks()
        if not owners or any(t.done() for t in owners):
            return None  # acquired outside a task or by a finished task: unknown releaser
        return ("all", owners)
    if isinstance(fut, _Task):
        return ("all", [fut])
    if _GatheringFuture is not None and isinstance(fut, _GatheringFuture):
        children = getattr(fut, "_children", None) or []
        pending = [c for c in children if not c.done()]
        if not pending or not all(isinstance(c, _Task) for c in pending):
            return None
        # One pending child: the gather ends only when it does. Several: one of
        # them failing may end it early, so all must be stuck.
        return ("all", pending)
    return None


def _timed_tasks(loop: Any, tasks: set[Any]) -> set[Any]:
    """Tasks among ``tasks`` that a scheduled timer or ready callback may wake or cancel.

    A handle counts when its callback is bound to the task (``task.cancel``) or
    to an object whose ``_task`` is the task, or when its arguments hold the
    task or the future it awaits.

    Recognised: ``asyncio.timeout``/``wait_for`` (3.11+: the timer's callback is
    bound to an object whose ``_task`` is the task), ``wait_for`` before 3.12
    and ``sleep`` (the timer's arguments hold the future the task awaits). A
    loop whose timers cannot be read (not asyncio's) counts every task as timed.
    """
    scheduled = getattr(loop, "_scheduled", None)
    ready = getattr(loop, "_ready", None)
    if scheduled is None or ready is None:
        return set(tasks)
    futs = {id(getattr(t, "_fut_waiter", None)): t for t in tasks}
    ids = {id(t): t for t in tasks}
    timed: set[Any] = set()
    for handle in list(scheduled) + list(ready):
        if getattr(handle, "_cancelled", False):
            continue
        callback = getattr(handle, "_callback", None)
        owner = getattr(callback, "__self__", None)
        target = getattr(owner, "_task", None)
        if target is not None and id(target) in ids:
            timed.add(ids[id(target)])
        if owner is not None and id(owner) in ids:
            timed.add(ids[id(owner)])
        for arg in getattr(handle, "_args", None) or ():
            hit = futs.get(id(arg)) or ids.get(id(arg))
            if hit is not None:
                timed.add(hit)
    return timed


def dead_tasks(starts: list[Any], loop: Any,
               assumed: Optional[dict[Any, Any]] = None) -> tuple[set[Any], dict[Any, Wait]]:
    """The tasks, reachable from ``starts``, whose waits can never end.

    Greatest fixpoint: assume every reachable task with a known wait is stuck,
    then keep only those whose wait cannot end given the others are stuck.
    """
    waits: dict[Any, Wait] = {}
    todo = list(starts)
    while todo:
        task = todo.pop()
        if task in waits:
            continue
        wait = wait_of(task, assumed)
        if wait is None:
            continue
        waits[task] = wait
        todo.extend(t for t in wait[1] if t not in waits)
    dead = set(waits)
    if not dead:
        return dead, waits
    for _ in range(2):
        changed = True
        while changed:
            changed = False
            for task in list(dead):
                mode, succ = waits[task]
                stuck = (all(s in dead for s in succ) if mode == "all"
                         else any(s in dead for s in succ))
                if not stuck:
                    dead.discard(task)
                    changed = True
        if not dead:
            break
        timed = _timed_tasks(loop, dead)
        if not timed:
            break
        dead -= timed
    return dead, waits


def cycle_from(start: Any, dead: set[Any], waits: dict[Any, Wait]) -> list[Any]:
    """The tasks met following stuck waits from ``start`` until one repeats."""
    path = [start]
    seen = {start}
    cur = start
    while True:
        nxt = next((t for t in waits[cur][1] if t in dead), None)
        if nxt is None or nxt in seen:
            if nxt is not None and nxt is not start:
                path = path[path.index(nxt):] if nxt in path else path
            return path
        path.append(nxt)
        seen.add(nxt)
        cur = nxt


# ---------------------------------------------------------------- findings


def _shown_wait(task: Any) -> Any:
    """The lock ``task`` waits for, or is about to queue on (for reports)."""
    lock = lock_wait(task)
    if lock is None:
        ts = states.get(task)
        if ts is not None and task is current_task():
            lock = ts.waiting
    return lock


def _describe_wait(task: Any, refs: dict[int, Any]) -> dict[str, Any]:
    lock = _shown_wait(task)
    if lock is not None:
        owners = lock._holder_tasks()
        ref = refs.get(id(lock))
        return {"kind": "lock", "lock": ref.to_dict() if ref else None, "timed": False,
                "held_by": ", ".join(task_name(t) for t in owners) or "nobody",
                "held_by_self": task in owners}
    fut = getattr(task, "_fut_waiter", None)
    if isinstance(fut, _Task):
        return {"kind": "await", "task": task_name(fut)}
    if _GatheringFuture is not None and isinstance(fut, _GatheringFuture):
        pending = [task_name(c) for c in getattr(fut, "_children", []) if not c.done()]
        return {"kind": "await", "task": ", ".join(pending), "via": "gather"}
    return {"kind": "running"}


def build_finding(cycle: list[Any], victim: Any, key: Any) -> Finding:
    from ._report import render_deadlock

    objs: list[Any] = []
    for task in cycle:
        ts = states.get(task)
        if ts is not None:
            objs.extend(ts.held)
        lock = _shown_wait(task)
        if lock is not None:
            objs.append(lock)
    refs = lock_refs(objs)
    entries: list[dict[str, Any]] = []
    stacks: list[StackInfo] = []
    for task in cycle:
        ts = states.get(task)
        holds = [{"lock": refs[id(lock)].to_dict(), "acquired_at": acquired_at(lock)}
                 for lock in (ts.held if ts is not None else [])]
        name = task_name(task)
        entries.append({"thread": name, "task": name, "alive": True, "holds": holds,
                        "waits_for": _describe_wait(task, refs)})
        stacks.append(StackInfo(name, "raises DeadlockError here" if task is victim
                                else "suspended here", task_stack(task)))
    names = [e["thread"] for e in entries]
    if len(cycle) == 1:
        summary = f"task {names[0]} waits for itself"
    else:
        summary = f"tasks {', '.join(names)} wait for each other in a cycle"
    finding = Finding(
        kind="deadlock", summary=summary, threads=names, locks=list(refs.values()),
        stacks=stacks,
        details={"rule": "task-cycle", "victim": task_name(victim), "threads": entries,
                 "asyncio": True},
        key=key,
    )
    finding.text = render_deadlock(finding)
    return finding


def report_deadlock(cycle: list[Any], victim: Any) -> Optional[Finding]:
    """Record the deadlock once; return it if the victim must raise (policy)."""
    key = ("deadlock", "tasks", frozenset(id(t) for t in cycle))
    if _findings.is_known(key):
        return None
    finding = build_finding(cycle, victim, key)
    if not _findings.record(finding):
        return None
    if _findings.apply_policy(finding, settings.on_deadlock):
        return finding
    return None


def check_wait(task: Any, loop: Any, lock: Any) -> None:
    """The check made when ``task`` is about to queue on ``lock``.

    Raises DeadlockError (policy ``raise``) if this wait closes a cycle.
    """
    try:
        dead, waits = dead_tasks([task], loop, {task: lock})
        if task not in dead:
            return
        cycle = cycle_from(task, dead, waits)
        finding = report_deadlock(cycle, task)
    except Exception as exc:
        _findings.internal_error("the asyncio deadlock check", exc)
        return
    if finding is not None:
        raise DeadlockError(str(finding), finding)


# ---------------------------------------------------------------- re-checks


class _Watch:
    """Re-checks the waits of one loop while some task waits on a lockwise lock.

    A wait can turn into a deadlock after it began without any lockwise call:
    the owner of the awaited lock later ``await``s the waiting task. So while
    waits exist, a timer re-runs the check, from the owners of contended locks,
    every ``check_interval`` at most (starting at 1 ms, doubling).
    """

    def __init__(self, loop: Any) -> None:
        self.loop = loop
        self.waiting: dict[Any, TaskState] = {}
        self.handle: Any = None
        self.interval = 0.001

    def add(self, ts: TaskState) -> None:
        self.waiting[ts.task] = ts
        self.interval = 0.001
        if self.handle is None:
            self.handle = self.loop.call_later(self.interval, self.tick)

    def discard(self, ts: TaskState) -> None:
        self.waiting.pop(ts.task, None)

    def tick(self) -> None:
        self.handle = None
        try:
            self._tick()
        except Exception as exc:
            _findings.internal_error("the asyncio deadlock re-check", exc)
        if self.waiting and not self.loop.is_closed():
            self.interval = min(self.interval * 2, settings.check_interval)
            self.handle = self.loop.call_later(self.interval, self.tick)
        else:
            _watches.pop(self.loop, None)

    def _tick(self) -> None:
        owners: dict[int, Any] = {}
        waiters: list[Any] = []
        for task, ts in list(self.waiting.items()):
            lock = lock_wait(task)
            if lock is None:
                if ts.waiting is None or task.done():
                    self.waiting.pop(task, None)
                continue
            waiters.append(task)
            for owner in lock._holder_tasks():
                owners[id(owner)] = owner
        if not owners:
            return
        dead, waits = dead_tasks(list(owners.values()), self.loop)
        if not dead:
            return
        for task in waiters:
            if task not in dead:
                continue
            # The victim: a stuck lock waiter on the cycle; raise at its await.
            cycle = cycle_from(task, dead, waits)
            victim = next((t for t in cycle if lock_wait(t) is not None), task)
            finding = report_deadlock(cycle, victim)
            if finding is not None:
                fut = victim._fut_waiter
                if fut is not None and not fut.done():
                    fut.set_exception(DeadlockError(str(finding), finding))
            return


_watches: dict[Any, _Watch] = {}


def watch(loop: Any, ts: TaskState) -> None:
    w = _watches.get(loop)
    if w is None:
        w = _watches[loop] = _Watch(loop)
    w.add(ts)


def unwatch(loop: Any, ts: TaskState) -> None:
    w = _watches.get(loop)
    if w is not None:
        w.discard(ts)


# ------------------------------------------------- thread locks and the loop


def is_async_code(code: CodeType) -> bool:
    return bool(code.co_flags & _CO_ASYNC)


def thread_name_of_loop() -> str:
    return threading.current_thread().name
