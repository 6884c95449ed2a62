"""Condition, Semaphore, BoundedSemaphore, Event and Barrier.

Condition keeps ``threading.Condition``'s algorithm (one private waiter lock
per waiting thread) but its waiter records know whether they were notified,
so the detector can tell a waiting thread from a woken one. The others are
``threading``'s own classes running over lockwise's Lock and Condition.
"""

from __future__ import annotations

import _thread
import sys
import threading
from operator import attrgetter

from ._errors import DeadlockError
from ._primitives import Lock, rlock_for
from ._sites import INTERNAL_FILES, raised_outside, site_of
from ._state import current_state
from ._waitfor import QUEUE_SKIP, CondWaiter, block_on

TYPE_CHECKING = False  # True for type checkers: typing is not imported at run time
if TYPE_CHECKING:
    from collections import deque as _deque
    from typing import Any, Callable, Optional
else:
    from _collections import deque as _deque  # as threading does: collections costs start-up

_allocate_lock = _thread.allocate_lock
_ThreadingCondition: Any = threading.Condition
_ThreadingSemaphore: Any = threading.Semaphore
_ThreadingBoundedSemaphore: Any = threading.BoundedSemaphore
_ThreadingEvent: Any = threading.Event
_ThreadingBarrier: Any = threading.Barrier


def _attributes_of(cls: Any, *args: Any) -> frozenset[str]:
    """The instance attributes ``threading``'s own ``__init__`` sets (feature test)."""
    try:
        return frozenset(vars(cls(*args)))
    except Exception:
        return frozenset()


# The constructors below set threading's private attributes themselves (the
# fast path, and a lockwise Condition in ``_cond``). They do so only where the
# running CPython's classes have exactly those attributes (3.10-3.14 do);
# elsewhere they run threading's own ``__init__`` and then replace ``_cond``.
# 3.14's Condition also exports its lock's ``locked`` (``Condition.locked()``).
_CONDITION_EXPORTS_LOCKED = "locked" in _attributes_of(_ThreadingCondition, _allocate_lock())
_SEMAPHORE_LAYOUT = _attributes_of(_ThreadingSemaphore, 1) == {"_cond", "_value"}
_BOUNDED_LAYOUT = (_attributes_of(_ThreadingBoundedSemaphore, 1)
                   == {"_cond", "_value", "_initial_value"})
_EVENT_LAYOUT = _attributes_of(_ThreadingEvent) == {"_cond", "_flag"}


class _Waiter(CondWaiter):
    __slots__ = ()

    def wake(self) -> bool:
        """Release the waiting thread; False if it was released already."""
        self.notified = True
        try:
            self.lock.release()
        except RuntimeError:
            self.notified = False
            return False
        return True


def _creator_kind(frame: Any) -> str:
    """'Event', 'Semaphore'... when created inside such a class's __init__."""
    while frame is not None and frame.f_code.co_filename in INTERNAL_FILES:
        if frame.f_code.co_name == "__init__":
            try:
                obj = frame.f_locals.get("self")
            except Exception:
                obj = None
            if obj is not None and not isinstance(obj, _ThreadingCondition):
                return type(obj).__name__
        frame = frame.f_back
    return "Condition"


#: How ``Condition.wait`` releases and restores its lock.
_FOREIGN = 0  # not lockwise's: threading's algorithm, through the lock's methods
_LOCK = 1     # lockwise's Lock
_RLOCK = 2    # lockwise's RLock


def _mode_of(lock: Any) -> int:
    if not hasattr(lock, "_acquire_slow"):
        return _FOREIGN
    return _RLOCK if hasattr(lock, "_count") else _LOCK


class Condition(_ThreadingCondition):  # type: ignore[misc]
    """A condition variable, drop-in for ``threading.Condition``.

    With no lock given it makes a lockwise RLock. ``wait()`` releases the lock
    for the wait (the thread no longer holds it in reports) and reacquires it;
    a wait that can never be notified raises :class:`lockwise.DeadlockError`.
    """

    #: What reports call it: "Event", "Semaphore"... when one of those made it.
    _kind = "Condition"

    def __init__(self, lock: Any = None) -> None:
        frame = sys._getframe(1)
        if lock is None:
            # threading.Condition.__init__ for a lockwise RLock, which has all
            # three optional methods (every Future makes one: this is hot).
            lock = self._lock = rlock_for(frame)
            site = lock._site
            self.acquire = lock.acquire
            self.release = lock.release
            self._release_save = lock._release_save  # type: ignore[method-assign]
            self._acquire_restore = lock._acquire_restore  # type: ignore[method-assign]
            self._is_owned = lock._is_owned
            if _CONDITION_EXPORTS_LOCKED:
                self.locked = lock.locked
            self._waiters: _deque[Any] = _deque()
            self._mode = _RLOCK
        else:
            super().__init__(lock)
            site = site_of(frame)
            self._mode = _mode_of(lock)
        self._site = site
        if frame.f_code.co_filename in INTERNAL_FILES:
            self._kind = _creator_kind(frame)

    # `with cond:` calls the lock's own methods, found through a C property and
    # getter: no Python frame (threading.Condition.__enter__) stands between
    # the caller and the acquire, so the acquisition site is the caller's own
    # frame, found without walking the stack.
    __enter__ = property(attrgetter("_lock.__enter__"))
    __exit__ = property(attrgetter("_lock.__exit__"))

    # threading.Condition's own methods for a lock without _release_save and
    # _acquire_restore (a Lock), keeping whether it was taken by `with`: the
    # lock is held that way again after the wait (see Lock._held_in_with).

    def _release_save(self) -> Any:
        lock = self._lock
        in_with = getattr(lock, "_held_in_with", False)
        lock.release()
        return in_with

    def _acquire_restore(self, in_with: Any) -> None:
        if in_with:
            self._lock.__enter__()
        else:
            self._lock.acquire()

    def wait(self, timeout: Optional[float] = None) -> bool:
        mode = self._mode
        if mode == _FOREIGN:
            if not self._is_owned():
                raise RuntimeError("cannot wait on un-acquired lock")
            return self._wait_foreign(current_state(), timeout)
        # lockwise's Lock or RLock: threading's _release_save/_acquire_restore
        # protocol, inlined (this is the hot path of every Queue and Future),
        # with the saved state read before the release: an exception at the
        # release's return must not lose it.
        ts = current_state()
        lock = self._lock
        if mode == _RLOCK:
            if lock._owner is not ts:
                raise RuntimeError("cannot wait on un-acquired lock")
            state: Any = (lock._count, ts.ident)
        else:
            if not lock._is_owned():  # held by any thread, as threading asks a Lock
                raise RuntimeError("cannot wait on un-acquired lock")
            state = lock._held_in_with  # taken by `with`: taken that way again
        # An exception (KeyboardInterrupt, a signal handler's) may come out of
        # any call below; whatever it interrupts, the lock is held again by
        # this thread when wait ends, as threading's restores it in a finally.
        # Whether it was released is read from the lock: its owner.
        # wait(0) only polls (Semaphore.acquire(timeout=0) does it on every
        # call): the lock is released and taken back, so other threads get
        # their turn, but no waiter is queued. threading's would be queued and
        # removed again, and a notify racing with that window may or may not
        # find it; returning False is the outcome of the notify coming after
        # the timeout, and leaves that notify to a real waiter.
        waiter = None
        if timeout is None or timeout > 0:
            waiter = _Waiter(self, _allocate_lock())
            waiter.lock.acquire()
            self._waiters.append(waiter)
            # Behind QUEUE_SKIP waiters not yet notified, this wait is likely
            # long too: no quiet wait (its timeout would cost a wake-up and a
            # GIL hand-off before registering anyway; 1,000 threads in one
            # Event.wait() each woke once more for it).
            quiet = len(self._waiters) <= QUEUE_SKIP
        gotit = False
        try:
            if mode == _RLOCK:
                lock._release_save()
            else:
                lock.release()
            if waiter is None:
                return False
            gotit = block_on(ts, waiter, waiter.lock, timeout, quiet)
            return gotit
        finally:
            # The lock is held again when wait ends, whatever interrupts it.
            # threading's blocking re-acquire is not interrupted by Ctrl-C or
            # interrupt_main() (only a real signal to a thread blocked in C
            # can), so the caller's ``with`` block can release it. lockwise's
            # wait is made of short waits between which signal handlers run:
            # an exception raised by one is kept until the lock is back. The
            # loop is written here, not in a method: a call's entry is itself
            # a point where a handler runs.
            interrupted: Optional[BaseException] = None
            while lock._owner is not ts:
                try:
                    if mode == _RLOCK:
                        lock._acquire_restore(state)
                    elif state:
                        lock.__enter__()
                    else:
                        lock.acquire()
                except DeadlockError:
                    raise
                except BaseException as exc:
                    if not (isinstance(exc, KeyboardInterrupt) or raised_outside(exc)):
                        raise  # lockwise's own error: not an interruption to retry
                    interrupted = exc
            if waiter is not None and not gotit:
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass
            if interrupted is not None:
                raise interrupted

    def _wait_foreign(self, ts: Any, timeout: Optional[float]) -> bool:
        """``wait`` over a lock that is not lockwise's: threading's algorithm."""
        if timeout is not None and timeout <= 0:
            saved_state = self._release_save()
            try:
                return False
            finally:
                self._acquire_restore(saved_state)
        waiter = _Waiter(self, _allocate_lock())
        waiter.lock.acquire()
        self._waiters.append(waiter)
        quiet = len(self._waiters) <= QUEUE_SKIP  # as in wait() above
        saved_state = self._release_save()
        gotit = False
        try:  # restore state no matter what (e.g., KeyboardInterrupt)
            gotit = block_on(ts, waiter, waiter.lock, timeout, quiet)
            return gotit
        finally:
            self._acquire_restore(saved_state)
            if not gotit:
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass

    def notify(self, n: int = 1) -> None:
        if not self._is_owned():
            raise RuntimeError("cannot notify on un-acquired lock")
        waiters = self._waiters
        while waiters and n > 0:
            waiter = waiters[0]
            if waiter.wake():
                n -= 1
            try:
                waiters.remove(waiter)
            except ValueError:
                pass


def _replace_cond(obj: Any) -> None:
    """After threading's own ``__init__`` (an unknown layout): use a lockwise
    Condition where it keeps a ``threading.Condition`` in ``_cond``; else
    leave the object as threading made it (its waits go unseen)."""
    if isinstance(obj.__dict__.get("_cond"), _ThreadingCondition):
        obj._cond = Condition(Lock())


class Semaphore(_ThreadingSemaphore):  # type: ignore[misc]
    """A semaphore, drop-in for ``threading.Semaphore`` (waits are visible)."""

    def __init__(self, value: int = 1) -> None:
        if not _SEMAPHORE_LAYOUT:
            super().__init__(value)
            _replace_cond(self)
            return
        if value < 0:
            raise ValueError("semaphore initial value must be >= 0")
        self._cond = Condition(Lock())
        self._value = value


class BoundedSemaphore(_ThreadingBoundedSemaphore):  # type: ignore[misc]
    """A bounded semaphore, drop-in for ``threading.BoundedSemaphore``."""

    def __init__(self, value: int = 1) -> None:
        if not _BOUNDED_LAYOUT:
            super().__init__(value)
            _replace_cond(self)
            return
        if value < 0:
            raise ValueError("semaphore initial value must be >= 0")
        self._cond = Condition(Lock())
        self._value = value
        self._initial_value = value


class Event(_ThreadingEvent):  # type: ignore[misc]
    """An event, drop-in for ``threading.Event`` (waits are visible)."""

    def __init__(self) -> None:
        if not _EVENT_LAYOUT:
            super().__init__()
            _replace_cond(self)
            return
        self._cond = Condition(Lock())
        self._flag = False


class Barrier(_ThreadingBarrier):  # type: ignore[misc]
    """A barrier, drop-in for ``threading.Barrier`` (waits are visible)."""

    def __init__(self, parties: int, action: Optional[Callable[[], Any]] = None,
                 timeout: Optional[float] = None) -> None:
        super().__init__(parties, action, timeout)
        self._cond = Condition(Lock())


for _cls in (Condition, Semaphore, BoundedSemaphore, Event, Barrier):
    _cls.__module__ = "lockwise"
