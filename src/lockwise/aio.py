"""asyncio locks that know their owner task, and deadlocks among tasks reported.

``Lock``, ``Condition``, ``Semaphore`` and ``BoundedSemaphore`` subclass the
interpreter's own asyncio classes (so fairness, cancellation and the 3.9
``loop=`` argument behave exactly as asyncio's on every version) and add:
the owner task (holder tasks for semaphores), where it acquired, waiters,
creation site, a ``repr`` that says so, and the checks below.

Algorithm. Everything runs on the loop's thread between task steps, so the
wait-for relation cannot change while it is read. A task's wait is *known*
when it can end only through other tasks:

* queued on a lockwise Lock: it needs the owner task (a semaphore: any holder);
* ``await task`` (``task._fut_waiter`` is a Task), ``asyncio.wait_for(task,
  None)``, ``asyncio.gather(...)`` (the pending children, all of which must be
  stuck when more than one is pending: one failing would end the gather).

When a task is about to queue on a held lock, the tasks reachable through
known waits are collected and the greatest fixpoint "stuck" set is computed (a
wait is stuck when every task that could end it is stuck). That is only a
candidate: any lock may be released by another task or a callback (hand-off)
and any task may be cancelled, by code lockwise does not follow. So a cycle is
provable, and :class:`lockwise.DeadlockError` raised, only when nothing else
may run on the loop (``_aio_wait.loop_may_wake``): no ready callback, no timer
(whatever it calls), no watched file descriptor but the loop's own wake-up
pipe, no signal handler (asyncio.run's Ctrl-C handler and timer signals
excepted, as for threads), a loop not stopping, and no other thread that may
run (every other thread blocked, untimed, on a wait lockwise validates; it
could otherwise call ``call_soon_threadsafe``). The waiting task then raises
at its ``await``, before it queues. A cycle can also close later without a
lock call (the owner later ``await``s the waiter, two tasks ``await`` each
other): every change on a loop happens in one of its iterations, so the check
runs again when the loop is about to go idle (nothing ready, no timer: the
``_run_once`` hook) and raises in one stuck task: a lock waiter's waiter
future fails, or a task awaiting a task is resumed with the error (what it
awaits is left alone). While lock waiters exist and only another thread stands
in the way, a lockwise timer (not a wake-up) looks again every
``check_interval``. A task inside ``Condition.wait`` is never the victim: its
re-acquisition must succeed before ``wait()`` returns, or the caller's release
would free the lock another task holds (the notifier awaiting it raises
instead; with no other candidate, the cycle is recorded, not raised). A
cancelled waiter leaves asyncio's queue (asyncio's own code wakes the next
one), so it leaves the relation too. Deadlocks are keyed by task uids and
per-wait serials, never ``id()``s: a new cycle of new tasks, or of tasks retrying
after a DeadlockError, is raised again.

Lock order: a task acquiring a lockwise asyncio Lock while holding others adds
edges to the same order graph and chain cache as threads (``_order``), with the
task's name in the report. Semaphores add no order edges (as ``threading``'s).

Mixed code (active once this module is imported):

* a lockwise thread lock taken by the loop's thread during a loop iteration,
  in async code (a coroutine, an ``@asynccontextmanager`` generator, an
  ``__aenter__``), and still held at its end, is held across an ``await``: a
  ``lock-order`` finding (rule ``held-across-await``), policy
  ``on_lock_order``; a "raise" goes to the loop's exception handler. Locks
  already held when the iteration began are not looked at again (O(1) per
  iteration while one stays held);
* a blocking, untimed acquire of a lockwise thread lock by the loop's thread
  while that thread already owns it (a task of the same loop holds it) and no
  other thread may run (one might release it: a hand-off) can never end:
  ``DeadlockError`` (rule ``loop``), policy ``on_deadlock``. With other
  threads, the stall rule of ``_waitfor`` decides, as outside a loop.

Cost. Uncontended ``acquire``: asyncio's own fast-path test, one dict lookup for
the task's state, three stores; nested acquisitions add the chain-cache lookup
(a chain not seen before also scans the loop's timers: an acquisition under a
deadline is timed and records no order, as a timed thread acquisition). A
contended acquire runs the check: O(tasks reachable through known waits),
then O(callbacks + timers + threads) when a candidate cycle is found. A loop
about to go idle pays O(1) when it has a timer or watched I/O; otherwise
O(threads) plus the tasks reachable from lock waiters (the whole task list only
when nothing at all can wake the loop).

Limits. Waits lockwise cannot attribute to tasks (Events, Queues, plain
futures, I/O, ``asyncio.wait``, TaskGroups, a Condition wait for a notify) count
as able to end, so freezes through them are not raised; the watchdog reports
a task suspended on one of asyncio's primitives, a lock, a task or a gather
past its timeout with no timer acting on it (``_aio_wait.hung_tasks``). A loop with a timer,
a ready callback or watched I/O (a server's listening socket), or a process
with another thread that may run, never gets a DeadlockError: any of them may
release or cancel (the watchdog reports the hang). A thread waiting in C counts
as able to run, as in ``_waitfor``: so does an idle ``ThreadPoolExecutor``
worker (in ``SimpleQueue.get``), left by ``run_in_executor``,
``asyncio.to_thread`` or ``getaddrinfo`` until the executor shuts down. A cycle of ``await``s with
no lock waiter is re-checked only when no other thread may run. Locks
acquired outside a task, or whose owner task finished, have no owner that can
be waited for. Loops that are not asyncio's selector loops (uvloop, the
proactor) expose no callbacks lockwise can read: no task deadlock is reported,
and the idle re-check and the held-across-await check need
``BaseEventLoop._run_once``. A thread lock acquired in a plain function called
from a coroutine is not seen as held across an await.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from types import FrameType

from . import _aio_wait, _findings, _order, _state, _waitfor
from ._aio_wait import (
    TaskState,
    check_wait,
    current_task,
    state_for,
    states,
    task_name,
    unwatch,
    watch,
)
from ._config import settings
from ._describe import acquired_at, lock_refs
from ._errors import DeadlockError, PotentialDeadlockError
from ._findings import Finding, StackInfo
from ._primitives import _acquire_site, _drop_held
from ._sites import Site, named_site, site_of
from ._state import ThreadState

TYPE_CHECKING = False  # True for type checkers: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Any, Optional

__all__ = ["BoundedSemaphore", "Condition", "Lock", "Semaphore", "install", "uninstall"]

_getframe = sys._getframe
_site_of = _order._site_of
_known = _order._known
_AsyncioLock: Any = asyncio.Lock
_AsyncioCondition: Any = asyncio.Condition
_AsyncioSemaphore: Any = asyncio.Semaphore
_AsyncioBoundedSemaphore: Any = asyncio.BoundedSemaphore


def _site(name: Optional[str], frame: Optional[FrameType]) -> Site:
    return site_of(frame) if name is None else named_site(name, frame)


def _check_loop(prim: Any) -> None:
    """Raise asyncio's own "bound to a different event loop" error before any check."""
    get_loop = getattr(prim, "_get_loop", None)  # 3.10+; 3.9 binds the loop at creation
    if get_loop is not None:
        get_loop()


def _note(ts: TaskState, lock: Any, task: Any) -> Optional[BaseException]:
    """Lock order of a task's nested acquisition (``_order.note``), unless timed.

    An acquisition under a deadline (``asyncio.timeout``, ``wait_for`` with a
    timeout, a cancel scope with a deadline, on this task or one awaiting it)
    is timed, and like a timed thread acquisition records no order: it cannot
    wait forever. With no timer on the loop this costs one test; otherwise a
    chain already validated costs one set lookup, and the timer scan
    (``under_timer``) runs only for a chain not seen before.
    """
    loop = task.get_loop()
    if getattr(loop, "_scheduled", None):  # no timer at all: untimed, one test
        chain = tuple(map(_site_of, ts.held))
        if (lock._site in chain or (chain, lock._site) not in _known) \
                and _aio_wait.under_timer(task, loop):
            return None
    return _order.note(ts, lock)  # type: ignore[arg-type]


class _Introspection:
    """Introspection shared by the asyncio primitives (not on the hot path)."""

    _site: Site
    _acq: Optional[tuple[Any, int]]
    _waiters: Any

    def _holder_tasks(self) -> list[Any]:
        raise NotImplementedError

    def _contended(self) -> bool:
        raise NotImplementedError

    @property
    def name(self) -> str:
        """The name given, or a label guessed from the creation line."""
        return self._site.label

    @property
    def site(self) -> str:
        """Where it was created, as ``path:line``."""
        return str(self._site)

    @property
    def acquired_at(self) -> Optional[str]:
        """Where the (latest) holder acquired it, as ``path:line``; None if free."""
        acq = self._acq
        if acq is None or not self._holder_tasks():
            return None
        return f"{acq[0].co_filename}:{acq[1]}"

    @property
    def waiters(self) -> list[Any]:
        """The tasks queued on it now (cancelled waiters excluded), in queue order."""
        futs = [f for f in (self._waiters or ()) if not f.done()]
        if not futs:
            return []
        try:
            tasks = asyncio.all_tasks(futs[0].get_loop())
        except Exception:
            return []
        by_fut = {id(getattr(t, "_fut_waiter", None)): t for t in tasks}
        return [by_fut[id(f)] for f in futs if id(f) in by_fut]

    def _extra(self) -> str:
        parts = [f"{self.name!r} ({self._site})"]
        holders = self._holder_tasks()
        if holders:
            parts.append("owner=" + ", ".join(task_name(t) for t in holders))
            if self.acquired_at:
                parts.append(f"acquired at {self.acquired_at}")
        return " ".join(parts)

    def __repr__(self) -> str:
        # asyncio's repr ends in "[locked, waiters:n]>": keep that, insert ours before.
        base: str = super().__repr__()
        cut = base.rfind(" [")
        if cut < 0:
            return base
        return f"{base[:cut]} {self._extra()}{base[cut:]}"


class Lock(_Introspection, _AsyncioLock):  # type: ignore[misc]
    """An asyncio lock, drop-in for ``asyncio.Lock``, owned by the acquiring task.

    ``await acquire()`` returns True once acquired, as asyncio's, and raises
    :class:`lockwise.DeadlockError` instead of waiting when the wait can never
    end (or later, while waiting, when a cycle closes). As with asyncio, any
    task may ``release()``; a lock released by another task than its owner is
    treated as a signal from then on (no ownership cycles, no order edges).
    ``name=`` names it in reports. On 3.9 ``loop=`` is passed to asyncio.
    """

    _kind = "asyncio.Lock"
    _locked: bool

    def __init__(self, *args: Any, name: Optional[str] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._site = _site(name, _getframe(1))
        self._owner: Optional[TaskState] = None
        self._acq: Optional[tuple[Any, int]] = None
        self._serial = 0

    @property
    def owner(self) -> Any:
        """The task holding the lock, or None (free, or taken outside a task)."""
        ts = self._owner
        return None if ts is None else ts.task

    def _holder_tasks(self) -> list[Any]:
        ts = self._owner
        return [] if ts is None else [ts.task]

    def _contended(self) -> bool:
        return bool(self._locked)

    async def acquire(self) -> bool:
        if not self._locked and (self._waiters is None
                                 or all(w.cancelled() for w in self._waiters)):
            self._locked = True
            ts = None
            try:  # an exception from any call below gives the lock back
                task = current_task()
                if task is not None:
                    ts = states.get(task) or state_for(task)
                    if ts.held and settings.lock_order:
                        error = _note(ts, self, task)
                        if error is not None:
                            raise error
                    self._owner = ts
                    self._acq = _acquire_site(_getframe(1))
                    ts.held.append(self)
                return True
            except BaseException:
                self._give_back(ts)
                raise
        return await self._acquire_slow(_getframe(1))

    def _give_back(self, ts: Optional[TaskState]) -> None:
        """Undo a take of the lock by ``ts`` that an exception interrupted."""
        if ts is not None and self._owner is ts:
            self._owner = None
        self._locked = False
        try:
            if ts is not None:
                _drop_held(ts, self)  # type: ignore[arg-type]
        finally:
            self._wake_up_first()

    async def _acquire_slow(self, frame: Optional[FrameType]) -> bool:
        task = current_task()
        if task is None:
            await super().acquire()
            return True
        ts = state_for(task)
        if ts.held and settings.lock_order:
            error = _note(ts, self, task)
            if error is not None:
                raise error
        _check_loop(self)
        loop = task.get_loop()
        acquired = False
        try:
            ts.waiting = self
            try:
                check_wait(task, loop, self)
                watch(loop, ts)
                # No call between asyncio's take (``_locked = True; return``) and
                # this store: an exception from any call below sees it.
                acquired = await super().acquire()
            finally:
                ts.waiting = None
                unwatch(loop, ts)
            self._owner = ts
            self._acq = _acquire_site(frame)
            ts.held.append(self)
            return True
        except BaseException:
            if acquired:
                self._give_back(ts)
            raise

    def release(self) -> None:
        if self._locked:
            owner = self._owner
            if owner is not None:
                self._owner = None
                try:  # released whatever interrupts the bookkeeping
                    _drop_held(owner, self)  # type: ignore[arg-type]
                    if owner.task is not current_task():
                        self._site.signal = True
                finally:
                    # asyncio.Lock.release, without a call before the store
                    self._locked = False
                    self._wake_up_first()
                return
        super().release()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *args: object) -> None:
        self.release()


class Condition(_Introspection, _AsyncioCondition):  # type: ignore[misc]
    """An asyncio condition, drop-in for ``asyncio.Condition``.

    With no lock given it makes a :class:`lockwise.aio.Lock`. ``wait()``
    releases the lock (the task no longer holds it in reports) and re-acquires
    it through the lock, so the re-acquisition is a checked wait. A wait for a
    notify itself is not part of the wait-for relation (anyone may notify).
    """

    _kind = "asyncio.Condition"

    def __init__(self, lock: Any = None, *args: Any, name: Optional[str] = None,
                 **kwargs: Any) -> None:
        frame = _getframe(1)
        if lock is None:  # 3.10+ rejects loop=: let asyncio's Condition say so
            lock = Lock(**kwargs) if sys.version_info < (3, 10) else Lock()
        super().__init__(lock, *args, **kwargs)
        self._site = _site(name, frame)
        self._acq = None

    @property
    def owner(self) -> Any:
        """The task holding the underlying lock, or None."""
        return getattr(self._lock, "owner", None)

    @property
    def acquired_at(self) -> Optional[str]:
        return getattr(self._lock, "acquired_at", None)

    def _holder_tasks(self) -> list[Any]:
        owner = self.owner
        return [] if owner is None else [owner]

    def _contended(self) -> bool:
        return bool(self.locked())

    async def wait(self) -> bool:
        # While a task is in wait(), its only lock wait is the re-acquisition,
        # which asyncio retries until it succeeds: a DeadlockError there would
        # leave wait() without the lock, and the caller's release (``async
        # with``'s exit) would release it under the task that holds it. Such
        # a task is never the victim (``TaskState.cond_waits``).
        task = current_task()
        ts = state_for(task) if task is not None else None
        if ts is not None:
            ts.cond_waits += 1
        try:
            return bool(await super().wait())
        finally:
            if ts is not None:
                ts.cond_waits -= 1

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *args: object) -> None:
        self.release()


class Semaphore(_Introspection, _AsyncioSemaphore):  # type: ignore[misc]
    """An asyncio semaphore, drop-in for ``asyncio.Semaphore``, knowing its holders.

    Holders are the tasks that acquired and have not released. A wait on an
    exhausted semaphore is stuck when every holder is stuck. A release by a
    task that holds nothing marks the semaphore's site as a signal (its waits
    are then never called stuck) and ends the oldest holding, so a semaphore
    released by other tasks than its acquirers keeps no more holders than
    permits taken. Semaphores add no lock-order edges.
    """

    _kind = "asyncio.Semaphore"

    def __init__(self, value: int = 1, *args: Any, name: Optional[str] = None,
                 **kwargs: Any) -> None:
        super().__init__(value, *args, **kwargs)
        self._site = _site(name, _getframe(1))
        self._holders: dict[Any, int] = {}
        self._acq: Optional[tuple[Any, int]] = None
        self._serial = 0

    @property
    def holders(self) -> list[Any]:
        """The tasks holding the semaphore, oldest first."""
        return list(self._holders)

    @property
    def owner(self) -> Any:
        """The first holder task, or None."""
        return next(iter(self._holders), None)

    def _holder_tasks(self) -> list[Any]:
        return list(self._holders)

    def _contended(self) -> bool:
        return bool(self._value <= 0)

    async def acquire(self) -> bool:
        task = current_task()
        if task is None:
            return bool(await super().acquire())
        frame = _getframe(1)
        if self.locked():
            ts = state_for(task)
            _check_loop(self)
            loop = task.get_loop()
            ts.waiting = self
            try:
                check_wait(task, loop, self)
                watch(loop, ts)
                await super().acquire()
            finally:
                ts.waiting = None
                unwatch(loop, ts)
        else:
            await super().acquire()
        self._holders[task] = self._holders.get(task, 0) + 1
        self._acq = _acquire_site(frame)
        return True

    def release(self) -> None:
        super().release()
        task = current_task()
        holders = self._holders
        count = holders.get(task, 0)
        if count > 1:
            holders[task] = count - 1
        elif count == 1:
            del holders[task]
        else:
            self._site.signal = True
            # A permit released for another task: one holding has ended, whose
            # is unknown. Drop the oldest (O(1)), so holders never outnumber
            # the permits taken, and finished tasks are not kept alive.
            oldest = next(iter(holders), None)
            if oldest is not None:
                if holders[oldest] > 1:
                    holders[oldest] -= 1
                else:
                    del holders[oldest]

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *args: object) -> None:
        self.release()


class BoundedSemaphore(Semaphore, _AsyncioBoundedSemaphore):  # type: ignore[misc]
    """Drop-in for ``asyncio.BoundedSemaphore``: release above the initial value raises
    ValueError (and changes nothing)."""

    _kind = "asyncio.BoundedSemaphore"


for _cls in (Lock, Condition, Semaphore, BoundedSemaphore):
    _cls.__module__ = "lockwise.aio"


# ---------------------------------------------------------------- install

_NAMES = ("Lock", "Condition", "Semaphore", "BoundedSemaphore")
_REPLACEMENTS: dict[str, Any] = {"Lock": Lock, "Condition": Condition, "Semaphore": Semaphore,
                                 "BoundedSemaphore": BoundedSemaphore}
_ORIGINALS: dict[str, Any] = {name: getattr(asyncio.locks, name) for name in _NAMES}


def _patch(installing: bool) -> None:
    """Make ``asyncio.Lock`` etc. (and ``asyncio.locks.*``) lockwise's, or restore them."""
    values = _REPLACEMENTS if installing else _ORIGINALS
    for name in _NAMES:
        setattr(asyncio, name, values[name])
        setattr(asyncio.locks, name, values[name])


def install() -> None:
    """Same as :func:`lockwise.install` (which covers asyncio too)."""
    from ._install import install as _install

    _install()


def uninstall() -> None:
    from ._install import uninstall as _uninstall

    _uninstall()


# ------------------------------------------------- thread locks and the loop

_get_ident = threading.get_ident


def _loop_thread_check(ts: ThreadState) -> None:
    """Registered in ``_waitfor``: a loop's thread blocking on a lock it owns."""
    res = ts.waiting
    if res is None or ts.wait_timed or isinstance(res, (_waitfor.CondWaiter, _waitfor.JoinWait)):
        return
    if res._owner is not ts or res._site.signal or hasattr(res, "_count"):
        return
    if _waitfor._released_from_outside(res):
        return  # a multiprocessing lock taken by acquire(): another process may release it
    loop = _aio_wait._get_running_loop()
    if loop is None or not res._inner.locked():
        return
    if _aio_wait._threads_may_run():
        return  # another thread may release it (a hand-off): the stall rule decides
    key = ("deadlock", "loop", ts.uid, ts.changes)
    if _findings.is_known(key):
        return
    acq = res._acq
    holder = _aio_wait.task_holding(loop, acq[0]) if acq is not None else None
    me = current_task()
    refs = lock_refs([res] + [h for h in ts.held if h is not res])
    ref = refs[id(res)]
    thread = threading.current_thread().name
    holder_name = (f"task {task_name(holder)}" if holder is not None and holder is not me
                   else f"task {task_name(me)} itself" if holder is me and me is not None
                   else "this thread")
    entry = {
        "thread": thread, "ident": ts.ident, "alive": True,
        "holds": [{"lock": refs[id(h)].to_dict(), "acquired_at": acquired_at(h)}
                  for h in ts.held],
        "waits_for": {"kind": "lock", "lock": ref.to_dict(), "timed": False,
                      "held_by": f"{holder_name} on this same thread", "held_by_self": False},
    }
    stacks = [StackInfo(f"{thread} ({task_name(me)})", "raises DeadlockError here",
                        _aio_wait.task_stack(me) if me is not None else [])]
    if holder is not None and holder is not me:
        stacks.append(StackInfo(task_name(holder), f"holds {ref.name}, suspended here",
                                _aio_wait.task_stack(holder)))
    from ._report import render_deadlock

    finding = Finding(
        kind="deadlock",
        summary=(f"{thread} runs an event loop and blocks it on {ref.name}, held by "
                 f"{holder_name} of the same loop: the loop can never run again to release it"),
        threads=[thread] + ([task_name(holder)] if holder is not None else []),
        locks=list(refs.values()), stacks=stacks,
        details={"rule": "loop", "victim": thread, "threads": [entry], "asyncio": True},
        key=key,
    )
    finding.text = render_deadlock(finding)
    if _findings.record(finding) and _findings.apply_policy(finding, settings.on_deadlock):
        raise DeadlockError(str(finding), finding)


def _held_across(loop: Any, ts: ThreadState, before: Optional[list[Any]]) -> None:
    """Thread locks taken in async code during this iteration and still held.

    Only locks that were not held when the iteration began are looked at: a
    lock held for many iterations costs nothing after the first. The code that
    took it (a coroutine, an ``@asynccontextmanager`` generator, an
    ``__aenter__``) has returned to the loop without releasing it, so whichever
    task runs next on this loop and takes it blocks the loop's thread.
    """
    for lock in list(ts.held):
        if before and any(h is lock for h in before):
            continue
        acq = lock._acq
        if acq is None or not _aio_wait.is_async_code(acq[0]):
            continue
        key = ("lock-order", "held-across-await", str(lock._site), acq[0].co_filename, acq[1])
        if _findings.is_known(key):
            continue
        # The task whose coroutine chain still runs the acquiring code (the
        # direct form); an __aenter__ or a generator has left it: unnamed.
        holder = _aio_wait.task_holding(loop, acq[0])
        ref = lock_refs([lock])[id(lock)]
        name = task_name(holder) if holder is not None else "a task of this loop"
        where = acquired_at(lock)
        stack = _aio_wait.task_stack(holder) if holder is not None else []
        finding = Finding(
            kind="lock-order",
            summary=f"thread lock {ref.name} held across an await by task {name}",
            threads=[name, threading.current_thread().name], locks=[ref],
            stacks=[StackInfo(name, f"acquired {ref.name} at {where}, suspended here", stack)],
            details={"rule": "held-across-await", "task": name, "acquired_at": where,
                     "lock": ref.to_dict(), "asyncio": True},
            key=key,
        )
        from ._report import _p, format_stack

        finding.text = "\n".join(
            [f"lockwise: potential deadlock: {_p(finding.summary)}", "",
             f"  {'Task ' if holder is not None else ''}{_p(name)} acquired the thread lock "
             f"{_p(ref.name)} ({_p(ref.site)}) at {_p(where)}",
             "  and is suspended at an await while holding it. Any other task of this loop",
             "  that acquires it blocks the loop's thread, and the loop can never resume",
             f"  {_p(name)} to release it: the whole loop freezes. Use an asyncio.Lock, or",
             "  release the thread lock before awaiting.", "",
             f"  {_p(name)}: suspended here"] + (format_stack(stack) or
                                                 ["    (no Python frames)"]))
        if not _findings.record(finding):
            continue
        error: Optional[BaseException] = None
        try:
            if _findings.apply_policy(finding, settings.on_lock_order):
                error = PotentialDeadlockError(str(finding), finding)
        except Exception as exc:  # -W error::lockwise.PotentialDeadlockWarning
            error = exc
        if error is not None:
            loop.call_exception_handler({"message": finding.summary, "exception": error})


_BaseEventLoop: Any = asyncio.base_events.BaseEventLoop
# One loop iteration: a private method (3.10-3.14 have it, see
# docs/python-versions.md). Where it is missing, loops are not hooked: no
# re-check when a loop goes idle and no held-across-await check.
_original_run_once: Any = getattr(_BaseEventLoop, "_run_once", None)
_thread_states = _state.states


def _run_once(self: Any) -> None:
    if not getattr(self, "_ready", True):  # nothing ready: the loop is going idle
        try:
            _aio_wait.on_idle(self)
        except Exception as exc:
            _findings.internal_error("the asyncio deadlock re-check", exc)
    ts = _thread_states.get(_get_ident())
    before = ts.held[:] if ts is not None and ts.held else None
    _original_run_once(self)
    if ts is None:
        ts = _thread_states.get(_get_ident())
    if ts is not None and ts.held:
        try:
            _held_across(self, ts, before)
        except Exception as exc:
            _findings.internal_error("the held-across-await check", exc)


def track_loops(enabled: bool = True) -> None:
    """Check asyncio loops for thread locks held across awaits (on by default)."""
    if _original_run_once is not None:
        _BaseEventLoop._run_once = _run_once if enabled else _original_run_once
    hooks = _waitfor.wait_checks
    if enabled and _loop_thread_check not in hooks:
        hooks.append(_loop_thread_check)
    elif not enabled and _loop_thread_check in hooks:
        hooks.remove(_loop_thread_check)


track_loops(True)
