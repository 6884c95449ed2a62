"""Tasks: their bookkeeping, the task wait-for relation and its deadlock check.

See :mod:`lockwise.aio` for the algorithm. Everything here runs on the event
loop's thread, between two steps of tasks, so the relation cannot change while
it is read: no locking is needed, and a check is exact for the moment it runs.
Other threads can change under it: their waits are read twice
(``_threads_may_run``). The watchdog's part (``hung_tasks``, at the end) runs
on the watchdog's thread and only reads.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sys
import threading
import time
import weakref
from types import CodeType, FrameType

from . import _findings
from ._config import settings
from ._describe import acquired_at, lock_refs
from ._errors import DeadlockError
from ._findings import Finding, FrameInfo, StackInfo
from ._sites import INTERNAL_FILES, frame_info
from ._state import internal_threads, new_uid, threads_starting
from ._state import states as thread_states

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

    __slots__ = ("task", "ident", "uid", "held", "waiting", "wait_serial", "cond_waits",
                 "quiet", "__weakref__")

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
        #: New at every lock wait and every DeadlockError raised in the task:
        #: with ``uid``, it keys a deadlock to one formation (a retry is another).
        self.wait_serial = 0
        #: > 0 while in ``Condition.wait``: never a victim (see ``victim_in``).
        self.cond_waits = 0
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
    """The lockwise lock/semaphore ``task`` is queued on now, or None (validated).

    O(1): ``waiting`` is set only around asyncio's own ``acquire``, whose one
    suspension point awaits the waiter future it queued; so a task suspended
    with ``waiting`` set awaits that future, and it is still queued while the
    future is not done (asyncio removes it when it completes). A task in
    ``check_wait``, about to queue, is running (``_fut_waiter`` is None).
    """
    ts = states.get(task)
    if ts is None or ts.waiting is None:
        return None
    fut = getattr(task, "_fut_waiter", None)
    if fut is None or fut.done() or isinstance(fut, _Task):
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


def _threads_may_run() -> bool:
    """Could a thread other than this one run (and call into the loop)?

    A thread counts as unable to run only when it is blocked, untimed, on a
    wait lockwise sees and validates (as the stall rule of ``_waitfor``); its
    wait is read twice, so one woken in between counts as running. Threads
    blocked in C (sockets, ``time.sleep``, ``SimpleQueue.get``) can run.
    """
    if threads_starting():
        return True
    me = threading.get_ident()
    idents = [i for i in sys._current_frames() if i != me and i not in internal_threads]
    if not idents:
        return False
    from ._waitfor import _released_from_outside, _valid

    first: list[tuple[Any, int, Any]] = []
    for ident in idents:
        ts = thread_states.get(ident)
        if ts is None or not ts.alive:
            return True
        changes, res = ts.changes, ts.waiting
        if res is None or ts.wait_timed or not _valid(res) or _released_from_outside(res):
            return True  # (the last: another process may release it, as in _waitfor._runs)
        first.append((ts, changes, res))
    return any(ts.changes != changes or ts.waiting is not res for ts, changes, res in first)


def _signal_may_wake(loop: Any) -> bool:
    """A signal handler that may act on the loop (see ``_waitfor.signal_may_wake``)."""
    if getattr(loop, "_signal_handlers", None):
        return True  # loop.add_signal_handler: a callback run on the loop
    if threading.current_thread() is not threading.main_thread():
        return False
    from ._waitfor import signal_may_wake

    return signal_may_wake()


def _ours(handle: Any) -> bool:
    return getattr(getattr(handle, "_callback", None), "__self__", None) is _RECHECK_MARK


def loop_may_wake(loop: Any, threads: bool = True, signals: bool = True) -> Optional[str]:
    """What, outside the task wait-for relation, may still run on ``loop``; None if nothing.

    Any pending callback or timer (whatever it calls: a release, a ``cancel``,
    a ``set_result`` that resumes a task which may do either), a watched file
    descriptor other than the loop's own wake-up pipe, a signal handler, a
    stopping loop, or another thread that may run (and call
    ``call_soon_threadsafe``). A loop whose internals differ from asyncio's
    selector loop (uvloop, the proactor) may always wake.
    """
    ready = getattr(loop, "_ready", None)
    scheduled = getattr(loop, "_scheduled", None)
    selector = getattr(loop, "_selector", None)
    if ready is None or scheduled is None or selector is None:
        return "an event loop whose callbacks lockwise cannot read"
    if getattr(loop, "_stopping", False):
        return "the loop is stopping"
    for handle in ready:
        if not handle._cancelled and not _ours(handle):
            return "a ready callback"
    for handle in scheduled:
        if not handle._cancelled and not _ours(handle):
            return "a timer"
    try:
        fds = selector.get_map()
        own = loop._ssock.fileno() if getattr(loop, "_ssock", None) is not None else None
        if any(key.fd != own for key in list(fds.values())):
            return "a watched file descriptor"
    except Exception:
        return "a selector lockwise cannot read"
    if signals and _signal_may_wake(loop):
        return "a signal handler"
    if threads and _threads_may_run():
        return "another thread"
    return None


def _decode(callback: Any, args: Any) -> list[Any]:
    """Objects a callback may act on: its arguments, bound object, partial's and closure's."""
    out: list[Any] = list(args or ())
    for _ in range(8):
        if isinstance(callback, functools.partial):
            out.extend(callback.args)
            out.extend((callback.keywords or {}).values())
            callback = callback.func
            continue
        owner = getattr(callback, "__self__", None)
        if owner is not None and not isinstance(owner, type(sys)):
            out.append(owner)
            for attr in ("_task", "_host_task"):  # asyncio.timeout; anyio's CancelScope
                target = getattr(owner, attr, None)
                if target is not None:
                    out.append(target)
        for cell in getattr(callback, "__closure__", None) or ():
            try:
                out.append(cell.cell_contents)
            except ValueError:
                pass
        break
    return out


def under_timer(task: Any, loop: Any) -> bool:
    """Does a scheduled timer act on ``task`` or on something awaiting it?

    Used to treat acquisitions under ``asyncio.timeout``, ``wait_for(...,
    timeout)`` or a cancel scope with a deadline as timed (no order edges), as
    timed thread acquisitions. Climbs from the task through done callbacks
    (whoever awaits it: a task's wake-up, gather, ``wait_for``'s waiter), so a
    deadline on an outer task counts, since its cancellation propagates.
    Cost: O(timers + awaiting depth), only when the loop has timers.
    """
    scheduled = getattr(loop, "_scheduled", None)
    if not scheduled:
        return False
    targets: set[int] = set()
    for handle in list(scheduled):
        if not handle._cancelled and not _ours(handle):
            targets.update(id(o) for o in _decode(handle._callback, handle._args))
    if not targets:
        return False
    seen: set[int] = set()
    todo = [task]
    while todo and len(seen) < 200:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if id(obj) in targets:
            return True
        for entry in getattr(obj, "_callbacks", None) or ():
            cb = entry[0] if isinstance(entry, tuple) else entry
            todo.extend(o for o in _decode(cb, ()) if isinstance(o, asyncio.Future))
    return False


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
    changed = True
    while changed and dead:
        changed = False
        for task in list(dead):
            mode, succ = waits[task]
            stuck = (all(s in dead for s in succ) if mode == "all"
                     else any(s in dead for s in succ))
            if not stuck:
                dead.discard(task)
                changed = True
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
        details={"rule": "task-cycle", "victim": task_name(victim) if victim is not None else None,
                 "threads": entries,
                 "asyncio": True},
        key=key,
    )
    finding.text = render_deadlock(finding)
    return finding


def cycle_key(cycle: list[Any]) -> Any:
    """The key of one formation of a deadlock: task uids and their wait serials.

    Never ``id()``s (reused once a task is freed): a new deadlock of new tasks,
    or the same tasks retrying after a DeadlockError, gets a new key.
    """
    return ("deadlock", "tasks",
            frozenset((ts.uid, ts.wait_serial) for ts in map(state_for, cycle)))


def report_deadlock(cycle: list[Any], victim: Any) -> Optional[Finding]:
    """Record the deadlock once; return it if the victim must raise (policy)."""
    key = cycle_key(cycle)
    if _findings.is_known(key):
        return None
    finding = build_finding(cycle, victim, key)
    if not _findings.record(finding):
        return None
    if _findings.apply_policy(finding, settings.on_deadlock):
        state_for(victim).wait_serial = new_uid()
        return finding
    return None


def check_wait(task: Any, loop: Any, lock: Any) -> None:
    """The check made when ``task`` is about to queue on ``lock``.

    Raises DeadlockError (policy ``raise``) if this wait closes a cycle that
    nothing outside the task wait-for relation may break (``loop_may_wake``).
    """
    try:
        if _a_holder_runs(lock):
            return  # the common case, in O(holders): no cycle can pass through it now
        dead, waits = dead_tasks([task], loop, {task: lock})
        if task not in dead or loop_may_wake(loop) is not None:
            return
        cycle = cycle_from(task, dead, waits)
        victim = victim_in(cycle, task)
        if victim is None:
            return  # the idle re-check reports it once the task has queued
        finding = report_deadlock(cycle, victim)
    except Exception as exc:
        _findings.internal_error("the asyncio deadlock check", exc)
        return
    if finding is None:
        return
    error = DeadlockError(str(finding), finding)
    if victim is task:
        raise error
    _raise_in(victim, error)


def _a_holder_runs(lock: Any) -> bool:
    """Is a wait on ``lock`` surely not stuck, by what ``wait_of`` reads first?

    True when the lock is used as a signal, is free, or has a holder that is
    done or awaits no future (ready to run, or in ``asyncio.sleep(0)``): such
    a holder is not stuck, so a wait for it is not either (``dead_tasks``
    would find the same, after building its sets).
    """
    if lock._site.signal or not lock._contended():
        return True
    return any(t.done() or getattr(t, "_fut_waiter", None) is None
               for t in lock._holder_tasks())


def victim_in(cycle: list[Any], current: Any = None) -> Any:
    """The task of ``cycle`` that raises: one whose error leaves every lock as is.

    ``current`` (about to queue on a lock) first, then a task queued on a lock,
    then a task awaiting a task or a gather (resumed with the error). Never a
    task in ``Condition.wait``: its re-acquisition must succeed before wait()
    returns, or the caller's release would free a lock another task holds.
    None if every task of the cycle is such a waiter (nothing is raised; the
    watchdog reports the hang).
    """
    def eligible(task: Any) -> bool:
        ts = states.get(task)
        return ts is None or not ts.cond_waits

    if current is not None and eligible(current):
        return current
    for task in cycle:
        if task is not current and eligible(task) and lock_wait(task) is not None:
            return task
    for task in cycle:
        if task is not current and eligible(task) and _can_raise_in(task):
            return task
    return None


# ---------------------------------------------------------------- re-checks
#
# A cycle can close after its last lock call (the owner later ``await``s the
# waiter; two tasks ``await`` each other). Every change on a loop happens in
# one of its iterations, so the check runs again when the loop is about to go
# idle: nothing ready, no timer (``on_idle``, called by ``lockwise.aio``'s
# ``_run_once``). Only a thread can change things without waking the loop (it
# exits, or blocks): while lock waiters exist and only threads stand in the
# way, a lockwise timer wakes the loop every ``check_interval`` to look again.


class _Waiters:
    """The tasks of one loop queued on lockwise locks (the roots of the re-check),
    by lock: ``locks[lock]`` maps each task queued on ``lock`` to its state."""

    __slots__ = ("locks", "lock_of", "handle")

    def __init__(self) -> None:
        self.locks: dict[Any, dict[Any, TaskState]] = {}
        self.lock_of: dict[Any, Any] = {}
        self.handle: Any = None


_waiters: dict[Any, _Waiters] = {}


def watch(loop: Any, ts: TaskState) -> None:
    """``ts`` is queued on ``ts.waiting``: O(1)."""
    w = _waiters.get(loop)
    if w is None:
        w = _waiters[loop] = _Waiters()
        if loop not in loops:
            # The watchdog polls the tasks of known loops: also a loop that
            # lockwise does not patch (uvloop), which never calls on_idle.
            loops.add(loop)
    lock = ts.waiting
    w.lock_of[ts.task] = lock
    queued = w.locks.get(lock)
    if queued is None:
        queued = w.locks[lock] = {}
    queued[ts.task] = ts


def unwatch(loop: Any, ts: TaskState) -> None:
    w = _waiters.get(loop)
    if w is not None:
        lock = w.lock_of.pop(ts.task, None)
        queued = w.locks.get(lock)
        if queued is not None:
            queued.pop(ts.task, None)
            if not queued:
                del w.locks[lock]
        if not w.lock_of and w.handle is None:
            del _waiters[loop]


class _RecheckMark:
    """The ``__self__`` of lockwise's own re-check timer: not a wake-up."""

    def recheck(self, loop: Any) -> None:
        w = _waiters.get(loop)
        if w is not None:
            w.handle = None
            if not w.lock_of:
                del _waiters[loop]


_RECHECK_MARK = _RecheckMark()


def _all_waiting(loop: Any) -> list[Any]:
    try:
        return [t for t in asyncio.all_tasks(loop)
                if getattr(t, "_fut_waiter", None) is not None]
    except Exception:
        return []


def _roots(w: _Waiters) -> list[Any]:
    """One queued task per lock waited for: the roots of the idle re-check.

    All the tasks queued on one lock wait for the same holders, so they are
    stuck together or not at all: one of them stands for the others, and the
    re-check costs O(locks waited for), not O(waiting tasks). The one chosen
    is one that may raise (not in ``Condition.wait``, see ``victim_in``) when
    there is one; such tasks are usually first in the queue.
    """
    roots: list[Any] = []
    for queued in list(w.locks.values()):
        spare = None
        for task, ts in queued.items():
            if lock_wait(task) is None:
                continue
            if not ts.cond_waits:
                roots.append(task)
                spare = None
                break
            if spare is None:
                spare = task
        if spare is not None:
            roots.append(spare)
    return roots


def on_idle(loop: Any) -> None:
    """The loop has nothing ready and no timer: is one of its task cycles provable?

    Cost when it is not: O(1) for a loop waiting on I/O, O(threads) otherwise,
    plus O(tasks reachable from lock waiters); the whole task list is read
    only when nothing at all can wake the loop (it is about to sleep forever).
    """
    if loop not in loops:
        loops.add(loop)
    w = _waiters.get(loop)
    if loop_may_wake(loop, threads=False, signals=False) is not None:
        return
    roots = _roots(w) if w is not None else []
    dead, waits = dead_tasks(roots, loop) if roots else (set(), {})
    if not dead:
        # No lock waiter is stuck: a cycle of awaits only, looked for among all
        # tasks when the loop is about to sleep with no thread that may wake it.
        if _threads_may_run():
            return
        roots = _all_waiting(loop)
        dead, waits = dead_tasks(roots, loop)
    if not dead or _signal_may_wake(loop):
        return
    if _threads_may_run():
        if w is not None and w.handle is None:
            w.handle = loop.call_later(settings.check_interval, _RECHECK_MARK.recheck, loop)
        return
    for task in roots:
        if task not in dead:
            continue
        cycle = cycle_from(task, dead, waits)
        victim = victim_in(cycle)
        if victim is None:
            key = cycle_key(cycle)
            if not _findings.is_known(key):  # recorded for the reports, raised nowhere
                _findings.record(build_finding(cycle, None, key))
            continue
        finding = report_deadlock(cycle, victim)
        if finding is not None:
            _raise_in(victim, DeadlockError(str(finding), finding))
        return


def _wakeup_of(task: Any, fut: Any) -> Any:
    """The done callback of ``fut`` that resumes ``task`` (its wake-up), with its context."""
    for entry in list(getattr(fut, "_callbacks", None) or ()):
        cb = entry[0] if isinstance(entry, tuple) else entry
        if getattr(cb, "__self__", None) is task:
            return entry
    return None


def _can_raise_in(task: Any) -> bool:
    fut = getattr(task, "_fut_waiter", None)
    return fut is not None and not fut.done() and _wakeup_of(task, fut) is not None


def _raise_in(task: Any, error: BaseException) -> None:
    """Make ``task`` raise ``error`` at the ``await`` it is suspended in.

    A lock waiter: its waiter future fails (asyncio's ``acquire`` then leaves
    the queue as for any error). A task awaiting a task or a gather: its
    wake-up is detached from what it awaits and called with a failed future,
    so the awaited task is left running, untouched.
    """
    fut = task._fut_waiter
    if lock_wait(task) is not None:
        fut.set_exception(error)
        return
    entry = _wakeup_of(task, fut)
    if entry is None:
        return
    cb, ctx = entry if isinstance(entry, tuple) else (entry, None)
    fut.remove_done_callback(cb)
    failed = task.get_loop().create_future()
    failed.set_exception(error)
    task.get_loop().call_soon(cb, failed, context=ctx)


# ------------------------------------------------- thread locks and the loop


def is_async_code(code: CodeType) -> bool:
    return bool(code.co_flags & _CO_ASYNC)


def thread_name_of_loop() -> str:
    return threading.current_thread().name


# ---------------------------------------------------------------- the watchdog
#
# Run by the watchdog's thread (``_watchdog.Watchdog.poll``), never on a loop:
# it only reads. A task counts as hung when it has stayed suspended on the
# same future for ``timeout`` seconds, the wait is of a kind lockwise follows
# for tasks (a lockwise lock, ``await task``, gather, or asyncio's Event,
# Queue, Condition, Semaphore, Barrier, TaskGroup: the freezes the deadlock
# check cannot prove), no timer acts on it (``asyncio.sleep``, a deadline),
# and the task that can end it, if only one kind can (the owner of the lock,
# the awaited task), is not running (``_ender_runs``). Each wait is reported
# once. Cost per poll: O(tasks + timers) for
# each loop that has gone idle at least once (``loops``).

#: Loops seen by the idle hook, for the watchdog.
loops: Any = weakref.WeakSet()
#: task -> (the future it waits on, since when): the identity of one wait.
_since: Any = weakref.WeakKeyDictionary()
#: task -> the uid of the wait that the last poll found hung, not yet reported.
_suspected: Any = weakref.WeakKeyDictionary()
_FOLLOWED = {os.path.join(_ASYNCIO_DIR, name)
             for name in ("locks.py", "queues.py", "taskgroups.py", "mixins.py")}


def _followed_wait(task: Any, fut: Any) -> Optional[str]:
    """What ``task`` waits for, if it is a wait the watchdog follows."""
    frames = coro_frames(task)
    user = [f for f in frames if f.f_code.co_filename not in INTERNAL_FILES]
    where = f" at {user[-1].f_code.co_filename}:{user[-1].f_lineno}" if user else ""
    if isinstance(fut, _Task):
        return f"task {task_name(fut)}{where}"
    if _GatheringFuture is not None and isinstance(fut, _GatheringFuture):
        return f"gather{where}"
    for frame in reversed(frames):
        code = frame.f_code
        if code.co_filename in _FOLLOWED:
            name = getattr(code, "co_qualname", None)  # 3.11+
            if name is None:
                owner = frame.f_locals.get("self")
                name = f"{type(owner).__name__}.{code.co_name}" if owner is not None \
                    else code.co_name
            return f"asyncio {name}{where}"
    return None


def _timer_targets(loop: Any) -> set[int]:
    targets: set[int] = set()
    for handle in list(getattr(loop, "_scheduled", None) or ()):
        if not handle._cancelled and not _ours(handle):
            targets.update(id(o) for o in _decode(handle._callback, handle._args))
    return targets


def _acted_on(task: Any, fut: Any, targets: set[int]) -> bool:
    """Does a timer (``targets``) act on ``task``, its future, or one awaiting it?"""
    seen: set[int] = set()
    todo = [task, fut]
    while todo and len(seen) < 200:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if id(obj) in targets:
            return True
        for entry in list(getattr(obj, "_callbacks", None) or ()):
            cb = entry[0] if isinstance(entry, tuple) else entry
            todo.extend(o for o in _decode(cb, ()) if isinstance(o, asyncio.Future))
    return False


def _ender_runs(task: Any, fut: Any, targets: set[int]) -> bool:
    """Is a task that can end this wait running (so it is not a hang)?

    As for threads (``_watchdog._ender_runs``): a lock wait ends through the
    owner (any holder of a semaphore), ``await task`` and gather through the
    awaited tasks. Such a task runs when it is not suspended on an untimed
    wait the watchdog follows (it is ready, sleeps, waits for I/O). Waits on
    Events, Queues, Conditions can end through any task: not decided here.
    """
    lock = lock_wait(task)
    if lock is not None:
        if lock._site.signal:
            return False
        enders = list(lock._holder_tasks())
    elif isinstance(fut, _Task):
        enders = [fut]
    elif _GatheringFuture is not None and isinstance(fut, _GatheringFuture):
        enders = [c for c in getattr(fut, "_children", None) or () if isinstance(c, _Task)]
    else:
        return False
    for other in enders:
        if other is task or other.done():
            continue
        ofut = getattr(other, "_fut_waiter", None)
        if ofut is None or _followed_wait(other, ofut) is None \
                or _acted_on(other, ofut, targets):
            return True
    return False


def hung_tasks(timeout: float, reported: set[Any],
               now: Optional[float] = None) -> list[tuple[Any, str, float, Any]]:
    """Tasks hung for ``timeout`` seconds, not in ``reported``: (task, label, seconds, key)."""
    now = time.monotonic() if now is None else now
    out: list[tuple[Any, str, float, Any]] = []
    for loop in list(loops):
        try:
            if loop.is_closed():
                continue
            tasks = list(asyncio.all_tasks(loop))
        except Exception:
            continue
        targets: Optional[set[int]] = None
        for task in tasks:
            fut = getattr(task, "_fut_waiter", None)
            # A done future: the task is woken and only waits for its turn.
            if fut is None or task.done() or fut.done():
                _since.pop(task, None)
                _suspected.pop(task, None)
                continue
            seen = _since.get(task)
            if seen is None or seen[0] is not fut:
                _since[task] = (fut, now, new_uid())
                continue
            if now - seen[1] < timeout or seen[2] in reported:
                continue
            try:
                label = _followed_wait(task, fut)
                if label is None:
                    continue
                if targets is None:
                    targets = _timer_targets(loop)
                if _acted_on(task, fut, targets) or _ender_runs(task, fut, targets):
                    _suspected.pop(task, None)
                    continue
            except RuntimeError:  # a deque or set changed under this thread: next poll
                continue
            # These reads race the loop's thread: a lock between its owner's
            # release and its first waiter's wake-up shows no owner for a moment.
            # A wait is hung only when two consecutive polls find it so.
            if _suspected.get(task) != seen[2]:
                _suspected[task] = seen[2]
                continue
            out.append((task, label, now - seen[1], seen[2]))
    return out


def build_task_hang(hung: list[tuple[Any, str, float, Any]], timeout: float) -> Finding:
    from ._report import render_hang

    names = [task_name(task) for task, _l, _s, _k in hung]
    entries = [{"thread": name, "task": name, "waits_for": label, "seconds": round(secs, 3),
                "holds": []} for name, (_t, label, secs, _k) in zip(names, hung)]
    stacks = [StackInfo(name, f"suspended for {secs:.1f}s on {label}", task_stack(task))
              for name, (task, label, secs, _k) in zip(names, hung)]
    finding = Finding(
        kind="hang",
        summary=f"tasks blocked for more than {timeout:g}s: " + "; ".join(
            f"{name} waits for {label}" for name, (_t, label, _s, _k) in zip(names, hung)),
        threads=names, locks=[], stacks=stacks,
        details={"timeout": timeout, "stuck": entries, "table": [], "asyncio": True},
        key=("hang", "tasks", frozenset(k for _t, _l, _s, k in hung)),
    )
    finding.text = render_hang(finding)
    return finding
