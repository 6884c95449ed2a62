"""Lock and RLock: drop-in for ``threading``'s, knowing owner and waiters.

The hot path is the uncontended ``acquire``: one non-blocking try of the
inner ``_thread`` lock, then three stores (owner, acquisition site, held
list). Everything else (blocking, deadlock checks, the lock-order graph for
nested acquisitions) is a function call away, in ``_waitfor`` and ``_order``.
Profiling (``lockwise.profile``) plugs in through ``wait_hook`` on the slow
path and, for hold times, by swapping the classes' methods while it runs.
"""

from __future__ import annotations

import _thread
import os
import sys
import threading
from types import FrameType, MethodDescriptorType

from . import _order, _sites, _waitfor
from ._config import settings
from ._errors import DeadlockError
from ._findings import printable
from ._sites import INTERNAL_FILES, Site, named_site, site_of, state_name, user_frame
from ._state import ThreadState, _local, current_state, new_state, registered_thread

TYPE_CHECKING = False  # True for type checkers: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Any, Callable, Optional

_allocate_lock = _thread.allocate_lock
_get_ident = threading.get_ident
_getframe = sys._getframe


#: Set by ``lockwise.profile`` while it runs: called instead of
#: ``_waitfor.wait_lock(ts, lock, timeout)`` (with the acquiring frame) by the
#: slow path of a blocking acquire, so contended waits can be timed. None when
#: profiling is off: the cost is one global load, on the slow path only.
wait_hook: Optional[Callable[[ThreadState, Any, float, Optional[FrameType]], bool]] = None
#: Set by a full ``lockwise.profile`` (hold times): called as ``hook(rlock, held)``
#: when an RLock is fully released for a Condition wait (False) and when it is
#: taken back (True). Condition binds these two methods when it is created, so
#: a method swap would miss the Conditions made before profiling started.
hold_hook: Optional[Callable[[Any, bool], None]] = None


def set_wait_hook(hook: Optional[Callable[[ThreadState, Any, float, Optional[FrameType]], bool]]
                  ) -> None:
    """Set (or clear, with None) ``wait_hook``. While a hook is set, a contended
    acquire goes to the slow path at once, without the accelerator's quiet wait,
    so that the hook sees every wait, short ones included."""
    global wait_hook
    wait_hook = hook
    _set_quiet_wait(0 if hook is not None else _waitfor.QUIET_WAIT_US)


def _no_quiet_wait(us: int) -> int:
    return 0  # the pure classes: block_on does the quiet wait, inside the hook


_set_quiet_wait: Callable[[int], int] = _no_quiet_wait


def _check_acquire_args(blocking: Any, timeout: Any) -> None:
    """Raise what ``_thread.lock.acquire`` raises for these arguments.

    A fresh lock is never held, so asking it with the same arguments either
    raises the interpreter's own error or succeeds at once.
    """
    _allocate_lock().acquire(blocking, timeout)


def _acquire_site(frame: Optional[FrameType]) -> Optional[tuple[Any, int]]:
    if frame is not None and frame.f_code.co_filename in INTERNAL_FILES:
        frame = user_frame(frame)
    if frame is None:
        return None
    return (frame.f_code, frame.f_lineno)


def _drop_held(owner: ThreadState, lock: Any) -> None:
    held = owner.held
    if held and held[-1] is lock:
        held.pop()
        return
    try:
        held.remove(lock)
    except ValueError:
        pass


#: Arguments of a non-blocking try of an inner lock, as ``map`` takes them.
_TRY = (False,)
#: Arguments of Lock.__enter__'s slow path, as ``map`` takes them.
_ENTER = (True,)
_FOREVER = (-1,)
_NOT_WAITED = (False,)


def _take(ts: ThreadState, lock: Any, blocking: bool, timeout: float,
          frame: Optional[FrameType], waited: bool, got: list[Any]) -> None:
    """The slow path's take of the inner lock: a try, or the order check and a
    wait. ``waited``: the accelerator already spent the quiet wait.

    The outcome goes to ``got`` (taken when ``got and got[-1]``), stored by C
    code as the inner acquire returns (see ``_waitfor.block_on``): when an
    asynchronous exception (KeyboardInterrupt, a signal handler's) comes out of
    here, the caller still knows whether it must give the inner lock back."""
    if not blocking:
        got[:] = map(lock._inner.acquire, _TRY)
        return
    if timeout == -1 and ts.held and settings.lock_order:
        error = _order.note(ts, lock)
        if error is not None:
            raise error
    _wait(ts, lock, timeout, frame, waited, got)


def _wait(ts: ThreadState, lock: Any, timeout: float, frame: Optional[FrameType],
          waited: bool, got: list[Any]) -> None:
    """Block for ``lock`` (through the profiler's hook when one is set)."""
    hook = wait_hook
    try:
        if hook is None:
            _waitfor.block_on(ts, lock, lock._inner, timeout, not waited, got)
        else:
            got[:] = map(hook, (ts,), (lock,), (timeout,), (frame,))
    except DeadlockError as exc:
        # Start the traceback here: the user's frames, not the detector's.
        raise exc.with_traceback(None) from None


def _untake(lock: Any, ts: ThreadState) -> None:
    """Give back the inner lock of ``lock``, taken by ``ts`` just now, whose
    take an exception interrupted (its owner recorded or not yet).

    Only for a take this thread made: the inner lock was free, so a recorded
    owner ``ts`` is this take's. Callers inline the first steps where a second
    interruption (this function's entry is an eval-breaker check) matters."""
    if lock._owner is ts:
        lock._owner = None
    lock._inner.release()
    _drop_held(ts, lock)


class _Introspection:
    """Introspection shared by Lock and RLock (not on the hot path)."""

    __slots__ = ()
    #: Makes the inner lock; the C accelerator substitutes its own lock type.
    _new_inner = staticmethod(_allocate_lock)
    _site: Site
    _owner: Optional[ThreadState]
    _acq: Optional[tuple[Any, int]]
    _inner: Any

    @property
    def name(self) -> str:
        """The lock's name: the one given, or a label guessed from its creation line."""
        return self._site.label

    @property
    def site(self) -> str:
        """Where the lock was created, as ``path:line``."""
        return str(self._site)

    @property
    def owner(self) -> Optional[threading.Thread]:
        """The thread that holds the lock (None if unlocked or the thread is gone)."""
        ts = self._owner
        if ts is None:
            return None
        return registered_thread(ts.ident)

    @property
    def owner_ident(self) -> Optional[int]:
        ts = self._owner
        return None if ts is None else ts.ident

    @property
    def acquired_at(self) -> Optional[str]:
        """Where the current owner acquired the lock, as ``path:line``."""
        acq = self._acq
        if acq is None or self._owner is None:
            return None
        return f"{acq[0].co_filename}:{acq[1]}"

    @property
    def waiters(self) -> list[int]:
        """Idents of the threads blocked on this lock now."""
        return _waitfor.waiters_of(self)

    def locked(self) -> bool:
        return bool(self._inner.locked())

    def _describe(self, count: Optional[int] = None) -> str:
        state = "locked" if self._inner.locked() else "unlocked"
        parts = [f"<{state} lockwise.{type(self).__name__} object at {id(self):#x}",
                 f"{self.name!r} ({self._site})"]
        owner = self._owner
        if owner is not None:
            parts.append(f"owner={state_name(owner)} (ident {owner.ident})")
            if count is not None:
                parts.append(f"count={count}")
            if self.acquired_at:
                parts.append(f"acquired at {self.acquired_at}")
        waiting = len(self.waiters)
        if waiting:
            parts.append(f"{waiting} waiting")
        return printable(" ".join(parts) + ">")  # names may hold escapes


class Lock(_Introspection):
    """A non-reentrant lock, drop-in for ``threading.Lock``.

    As with ``threading.Lock``, any thread may release it. The thread that
    acquired it is its owner for reports; a lock released by another thread
    is treated as a signal (no order edges, no ownership-based cycles).

    ``acquire(blocking=True, timeout=-1)`` returns True when acquired, False
    when a non-blocking or timed attempt fails, and raises
    :class:`lockwise.DeadlockError` instead of blocking forever.
    """

    __slots__ = ("_inner", "_owner", "_site", "_acq", "_serial", "_held_in_with",
                 "__weakref__")

    def __init__(self, name: Optional[str] = None) -> None:
        self._inner = self._new_inner()
        self._owner: Optional[ThreadState] = None
        self._site = site_of(_getframe(1)) if name is None else named_site(name, _getframe(1))
        self._acq: Optional[tuple[Any, int]] = None
        self._serial = 0
        #: True while the holder took the lock with ``with`` (``__enter__``):
        #: its own ``__exit__`` releases it, so only it can. Read-only on the
        #: C Lock: set through _set_held_in_with.
        self._set_held_in_with(False)

    # acquire and __enter__ are one algorithm, written out twice (the hot path
    # pays no extra call): they differ in _held_in_with only. The try of the
    # inner lock stores its result from C (``got += map(...)``: no bytecode
    # runs between the acquire and the store), so that an asynchronous
    # exception raised at any eval-breaker check after it (a call's return) is
    # seen with the lock taken, and the take undone.

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        got: list[bool] = []
        if timeout == -1:
            try:
                ts = _local.ts
            except AttributeError:
                ts = new_state()
            try:
                got += map(self._inner.acquire, _TRY)
                if got[0]:
                    # Owner first: the order check may run a finalizer that
                    # takes this lock again (see _speedups.c take()).
                    self._held_in_with = False
                    self._owner = ts
                    if blocking and ts.held and settings.lock_order:
                        error = _order.note(ts, self)
                        if error is not None:
                            raise error
                    self._acq = _acquire_site(_getframe(1))
                    ts.held.append(self)
                    return True
            except BaseException:
                if got and got[0]:
                    if self._owner is ts:
                        self._owner = None
                    self._inner.release()
                    _drop_held(ts, self)
                raise
            if not blocking:
                return False
        # The slow path's True is stored from C too: on Python < 3.11 the return
        # of a Python call is an eval-breaker check as well. Kept in this
        # frame, the caller's: it is the one whose return nothing checks.
        try:
            got[:] = map(self._acquire_slow, (blocking,), (timeout,), (_getframe(1),))
            return got[0]  # a bool: no call between the store and the return
        except BaseException:
            if got and got[0]:
                _untake(self, current_state())
            raise

    def __enter__(self) -> bool:
        try:
            ts = _local.ts
        except AttributeError:
            ts = new_state()
        got: list[bool] = []
        try:
            got += map(self._inner.acquire, _TRY)
            if got[0]:
                self._held_in_with = True  # owner first, as in acquire
                self._owner = ts
                if ts.held and settings.lock_order:
                    error = _order.note(ts, self)
                    if error is not None:
                        raise error
                self._acq = _acquire_site(_getframe(1))
                ts.held.append(self)
                return True
        except BaseException:
            if got and got[0]:
                if self._owner is ts:
                    self._owner = None
                self._inner.release()
                _drop_held(ts, self)
            raise
        try:  # as in acquire
            got[:] = map(self._acquire_slow, _ENTER, _FOREVER, (_getframe(1),), _NOT_WAITED,
                         _ENTER)
            return got[0]
        except BaseException:
            if got and got[0]:
                _untake(self, current_state())
            raise

    def _acquire_slow(self, blocking: bool, timeout: float, frame: Optional[FrameType],
                      waited: bool = False, in_with: bool = False) -> bool:
        """Everything but the uncontended untimed acquire (both implementations).
        Returns True with the lock recorded as held, or False or raises with the
        inner lock not taken, whatever exception interrupts it."""
        _check_acquire_args(blocking, timeout)
        ts = current_state()
        got: list[Any] = []
        try:
            _take(ts, self, blocking, timeout, frame, waited, got)
            if not (got and got[-1]):
                return False
            self._set_held_in_with(in_with)
            self._owner = ts
            self._acq = _acquire_site(frame)
            ts.held.append(self)
            return True
        except BaseException:
            if got and got[-1]:
                if self._owner is ts:
                    self._owner = None
                self._inner.release()
                _drop_held(ts, self)
            raise

    def _set_held_in_with(self, value: bool) -> None:
        # The C Lock exposes _held_in_with read-only and has its own setter.
        self._held_in_with = value

    def release(self) -> None:
        owner = self._owner
        if owner is None:
            # Unlocked (this raises RuntimeError as threading does), or an
            # acquirer is between taking the inner lock and recording itself.
            self._inner.release()
            return
        self._owner = None
        self._held_in_with = False
        try:  # the inner lock is given back whatever interrupts the bookkeeping
            # Another thread releasing this lock at the same time (a bug that
            # threading answers with RuntimeError, which the inner release
            # below raises) may remove it between the check and the pop: the
            # pop is checked, and a wrong one put back where it was (the end).
            # No Python call here (its entry is an eval-breaker check).
            held = owner.held
            if held and held[-1] is self:
                try:
                    popped = held.pop()
                except IndexError:
                    popped = self
                if popped is not self:
                    held.append(popped)
            elif self in held:
                try:
                    held.remove(self)
                except ValueError:
                    pass
            if owner.ident != _get_ident():
                self._site.signal = True
        finally:
            self._inner.release()

    def __exit__(self, *args: object) -> None:
        # release(), written out: one Python call less (its entry is an
        # eval-breaker check, where an exception would leave the lock held).
        owner = self._owner
        if owner is None:
            self._inner.release()
            return
        self._owner = None
        self._held_in_with = False
        try:
            held = owner.held  # as in release
            if held and held[-1] is self:
                try:
                    popped = held.pop()
                except IndexError:
                    popped = self
                if popped is not self:
                    held.append(popped)
            elif self in held:
                try:
                    held.remove(self)
                except ValueError:
                    pass
            if owner.ident != _get_ident():
                self._site.signal = True
        finally:
            self._inner.release()

    def _is_owned(self) -> bool:
        # What threading.Condition asks a lock without _is_owned, by trying
        # and releasing it ("held by any thread"), answered without the try:
        # a failed try of a held lock would take the slow path.
        return bool(self._inner.locked())

    def _at_fork_reinit(self) -> None:
        # In a forked child (logging reinitialises its module lock, held by the
        # forking thread since its before-fork hook): not held any more.
        owner = self._owner
        if owner is not None:
            _drop_held(owner, self)
        self._inner._at_fork_reinit()
        self._owner = None
        self._set_held_in_with(False)
        self._acq = None

    def __repr__(self) -> str:
        return self._describe()


class RLock(_Introspection):
    """A reentrant lock, drop-in for ``threading.RLock``.

    Only its owner may release it; each ``acquire`` by the owner must be
    matched by one ``release``.
    """

    __slots__ = ("_inner", "_owner", "_count", "_site", "_acq", "_serial", "__weakref__")

    def __init__(self, name: Optional[str] = None) -> None:
        self._inner = self._new_inner()
        self._owner: Optional[ThreadState] = None
        self._count = 0
        self._site = site_of(_getframe(1)) if name is None else named_site(name, _getframe(1))
        self._acq: Optional[tuple[Any, int]] = None
        self._serial = 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        got: list[bool] = []
        if timeout == -1:
            try:
                ts = _local.ts
            except AttributeError:
                ts = new_state()
            if self._owner is ts:
                self._count += 1
                return True
            try:  # the inner try's result stored from C: see Lock.acquire
                got += map(self._inner.acquire, _TRY)
                if got[0]:
                    # Owner first: a finalizer run by the order check that
                    # takes this RLock again re-enters it (see Lock.acquire).
                    self._count = 1
                    self._owner = ts
                    if blocking and ts.held and settings.lock_order:
                        error = _order.note(ts, self)
                        if error is not None:
                            raise error
                    self._acq = _acquire_site(_getframe(1))
                    ts.held.append(self)
                    return True
            except BaseException:
                if got and got[0]:
                    if self._owner is ts:
                        self._owner = None
                        self._count = 0
                    self._inner.release()
                    _drop_held(ts, self)
                raise
            if not blocking:
                return False
        try:  # the slow path's True stored from C: see Lock.acquire
            got[:] = map(self._acquire_slow, (blocking,), (timeout,), (_getframe(1),))
            return got[0]
        except BaseException:
            if got and got[0]:
                if self._count > 1:  # a re-entry: take back its count
                    self._count -= 1
                else:
                    self._count = 0
                    _untake(self, current_state())
            raise

    __enter__ = acquire

    def _acquire_slow(self, blocking: bool, timeout: float, frame: Optional[FrameType],
                      waited: bool = False, count: int = 1) -> bool:
        """Everything but the uncontended untimed acquire (both implementations);
        ``count``: the recursion count to take it with (a Condition's restore).
        Returns True with the lock recorded as held, or False or raises with the
        inner lock not taken, whatever exception interrupts it."""
        _check_acquire_args(blocking, timeout)
        ts = current_state()
        if self._owner is ts:
            self._count += 1
            return True
        got: list[Any] = []
        try:
            _take(ts, self, blocking, timeout, frame, waited, got)
            if not (got and got[-1]):
                return False
            self._count = count
            self._owner = ts
            self._acq = _acquire_site(frame)
            ts.held.append(self)
            return True
        except BaseException:
            if got and got[-1]:
                if self._owner is ts:
                    self._owner = None
                    self._count = 0
                self._inner.release()
                _drop_held(ts, self)
            raise

    def release(self) -> None:
        ts: ThreadState
        try:
            ts = _local.ts
        except AttributeError:
            ts = new_state()
        if self._owner is not ts:
            raise RuntimeError("cannot release un-acquired lock")
        count = self._count - 1
        if count:
            self._count = count
            return
        self._count = 0
        self._owner = None
        try:  # the inner lock is given back whatever interrupts the bookkeeping
            held = ts.held
            if held and held[-1] is self:
                held.pop()
            elif self in held:
                held.remove(self)
        finally:
            self._inner.release()

    def __exit__(self, *args: object) -> None:
        # release(), written out: see Lock.__exit__.
        ts: ThreadState
        try:
            ts = _local.ts
        except AttributeError:
            ts = new_state()
        if self._owner is not ts:
            raise RuntimeError("cannot release un-acquired lock")
        count = self._count - 1
        if count:
            self._count = count
            return
        self._count = 0
        self._owner = None
        try:
            held = ts.held
            if held and held[-1] is self:
                held.pop()
            elif self in held:
                held.remove(self)
        finally:
            self._inner.release()

    # The protocol threading.Condition uses to release an RLock fully for a wait.

    def _is_owned(self) -> bool:
        return self._owner is current_state()

    def _release_save(self) -> tuple[int, Optional[int]]:
        ts = current_state()
        if self._owner is not ts or not self._count:
            raise RuntimeError("cannot release un-acquired lock")
        hook = hold_hook
        if hook is not None:
            hook(self, False)
        state = (self._count, ts.ident)
        self._count = 0
        self._owner = None
        try:  # given back whatever interrupts the bookkeeping
            held = ts.held
            if held and held[-1] is self:
                held.pop()
            elif self in held:
                held.remove(self)
        finally:
            self._inner.release()
        return state

    def _acquire_restore(self, state: tuple[int, Optional[int]]) -> None:
        # The count is set with the owner, in one take: an exception cannot
        # leave the lock held with another count.
        self._acquire_slow(True, -1, _getframe(1), False, state[0])
        hook = hold_hook
        if hook is not None:
            hook(self, True)

    def _recursion_count(self) -> int:
        return self._count if self._owner is current_state() else 0

    @property
    def count(self) -> int:
        """The owner's recursion count (0 when unlocked)."""
        return self._count

    def _at_fork_reinit(self) -> None:
        owner = self._owner  # as Lock._at_fork_reinit
        if owner is not None:
            _drop_held(owner, self)
        self._inner._at_fork_reinit()
        self._owner = None
        self._count = 0
        self._acq = None

    def __repr__(self) -> str:
        return self._describe(self._count)


def rlock_for(frame: FrameType) -> Any:
    """A new RLock whose creation site is the first user frame at or above
    ``frame``: a Condition's own lock (the Condition takes its site from it).
    Faster than ``RLock()``, which looks for the frame itself."""
    return rlock_at(site_of(frame))


def rlock_at(site: Site) -> Any:
    """A new RLock whose creation site is ``site``."""
    lock = RLock.__new__(RLock)
    lock._inner = lock._new_inner()
    lock._owner = None
    lock._count = 0
    lock._site = site
    lock._acq = None
    lock._serial = 0
    return lock


# ---------------------------------------------------------------- selection
# Lock and RLock above are the pure-Python reference. When the optional C
# accelerator (_speedups) was built, and LOCKWISE_PURE is not "1", the names
# Lock and RLock are rebound to the same classes with a C hot path (_accel);
# every module importing them from here gets the selected implementation.

PureLock = Lock
PureRLock = RLock


def subclasses_owning(cls: type, name: str) -> list[type]:
    """The subclasses of ``cls``, at any depth, whose own ``name`` is a C method.

    The accelerated classes give each of their subclasses its own descriptors
    of the C hot methods (``_accel.own_hot_methods``: CPython specializes a
    call only on the descriptor's exact class).
    """
    out: list[type] = []
    seen: set[type] = set()
    todo: list[type] = list(type.__subclasses__(cls))
    while todo:
        sub = todo.pop()
        if sub in seen:
            continue
        seen.add(sub)
        if isinstance(vars(sub).get(name), MethodDescriptorType):
            out.append(sub)
        todo.extend(type.__subclasses__(sub))
    return out


_NOT_SET = object()


def swap_method(saved: list[tuple[type, str, Any]], cls: type, name: str, func: Any) -> None:
    """Set ``cls.name = func`` until ``restore_methods(saved)``.

    For the code that swaps a method on lockwise's classes for a while (the
    profiler, ``confirm``'s scheduler). Subclasses holding their own C
    descriptor of ``name`` (``subclasses_owning``) lose it meanwhile, so that
    their locks inherit ``func`` too.
    """
    for sub in subclasses_owning(cls, name):
        saved.append((sub, name, vars(sub)[name]))
        delattr(sub, name)
    saved.append((cls, name, vars(cls).get(name, _NOT_SET)))
    setattr(cls, name, func)


def restore_methods(saved: list[tuple[type, str, Any]]) -> None:
    """Undo the ``swap_method`` calls recorded in ``saved``, newest first."""
    while saved:
        cls, name, old = saved.pop()
        if old is _NOT_SET:
            delattr(cls, name)
        else:
            setattr(cls, name, old)


#: "c" when the accelerated classes are in use, "pure" otherwise.
IMPLEMENTATION = "pure"

if not TYPE_CHECKING and os.environ.get("LOCKWISE_PURE") != "1":
    try:
        from . import _accel
    except ImportError:
        pass
    else:
        Lock = _accel.accelerate(PureLock, _accel.LockBase)
        RLock = _accel.accelerate(PureRLock, _accel.RLockBase)
        IMPLEMENTATION = "c"
        _accel.setup_rlock(RLock, _sites._by_offset, site_of)
        rlock_for = _accel.new_rlock
        _set_quiet_wait = _accel.set_quiet_wait
        _set_quiet_wait(_waitfor.QUIET_WAIT_US)
