"""The acquire/wait/confirm algorithm of the cross-process locks, written once.

:class:`SharedLock` is the base of :class:`lockwise.FileLock` (an OS file
lock, with the SQLite wait-for store of :mod:`lockwise._shared_store`) and
:class:`lockwise.redis.RedisLock` (a lease on a Redis server, with its Lua
store). A shared lock is held by one *participant* (a thread of a process:
:func:`lockwise._shared_store.participant`); its store, seen by every
process, keeps who holds each lock and who waits for what.

Backend protocol. A backend provides the steps; the base runs them:

* ``_try_take(frame, deadline)``: one attempt that does not wait. On success
  the lock is taken *and* published as held by the caller (its wait record
  dropped in the same step) and the grant is returned (FileLock: True;
  RedisLock: the token, the time the request was sent, the participant),
  else None. May raise one of ``_transient``;
* ``_register_and_check(timed, deadline)``: register (or refresh) the
  caller's wait and follow waits and holders from it, atomically in the
  store; the path of a cycle back to the caller, or None. Of the waiters
  that close a cycle of locks only, exactly one sees it (the store drops
  that one's wait in the same step);
* ``_unregister()``: drop the caller's wait record;
* ``_pause(seconds, n)``: wait at most ``seconds`` for a chance to take (the
  ``n``-th pause of this wait: FileLock sleeps with a backoff, RedisLock
  blocks on the lock's wake-up list);
* ``_give_back(ts, grant)``: release a grant that this acquire does not keep
  (an exception came after it: a lock-order error, Ctrl-C);
* ``_note_order(shared)``: record "this lock taken while holding those" in
  the store's lock-order graph; an exception to raise, or None;
* small queries: ``_granted`` (keep the grant; what ``acquire`` returns),
  ``_again`` (what a reentrant acquire returns), ``_checking`` (is the store
  used now), ``_same_store``, ``_holds`` and ``_store_label`` (for the
  finding).

``release`` is the backend's own: FileLock's is written out against
asynchronous exceptions, RedisLock's raises LeaseLostError.

Algorithm. ``acquire`` checks local lock order, takes the thread-level inner
lock where the backend has one (FileLock: threads of one process queue
there, where the local detector sees them), then tries once. A blocking
acquire then waits; each round:

1. raises :class:`DeadlockError` if the local detector chose this thread as
   the victim of a cycle (``ts.doom``);
2. every ``_recheck`` seconds, registers the wait and checks for a cycle.
   The confirmation rule (:func:`confirmed`): a cycle of shared locks only is
   a deadlock at once (the check is atomic with the registration); a cycle
   through a *link* (a thread -> thread wait on a local lock, published from
   a snapshot that may be stale) must be seen, the same, on two consecutive
   checks. The caller is the victim: it raises, naming every participant;
3. tries to take the lock;
4. meets the deadline: returns None once it has passed. A backend whose try
   is a local system call (``_try_at_deadline``: FileLock) tries once more
   when woken at its deadline; one whose try is a round trip (RedisLock)
   starts no call after it, so that its acquire returns within its timeout
   plus one call's margin;
5. pauses until the next check, the deadline, or the backend's wake-up.

Transient store errors (``_transient``: RedisLock's connection errors) are
retried every ``_retry`` seconds until the deadline. Whatever ends the wait,
the wait record is dropped.

Asynchronous exceptions. The outcome of every take (the inner lock, a try,
the whole wait) is stored from C as it returns (``taken[:] = map(...)``, as
in ``_primitives.Lock.acquire``): whatever exception a signal handler or
Ctrl-C raises inside ``acquire``, the lock is either held and recorded, or
given back before the exception propagates.

Cost. The base adds a few attribute reads and Python calls to the backend's
own costs (see each backend). A blocked acquire makes one try per pause and
one store check per ``_recheck`` seconds.

Limits. One participant waits for one thing at a time (a thread). A cycle
through a link needs two checks, so it is found ``_recheck`` seconds later
than one of locks only. The store is trusted (see each backend's "Trust").
"""

from __future__ import annotations

import sys
import time
import types

from . import _order, _waitfor
from ._config import settings
from ._errors import DeadlockError
from ._primitives import _TRY, _acquire_site, _check_acquire_args, _Introspection
from ._shared_store import deadlock_finding, raise_deadlock
from ._state import ThreadState, begin_wait, current_state, end_wait

TYPE_CHECKING = False  # True for type checkers: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Any, Callable, Optional

_monotonic = time.monotonic


def cycle_of(path: list[dict[str, Any]]) -> frozenset[tuple[str, str]]:
    """The identity of a cycle found by a check: its (participant, lock) pairs."""
    return frozenset((step["who"], step["key"]) for step in path)


def confirmed(path: list[dict[str, Any]], pending: Optional[frozenset[tuple[str, str]]]
              ) -> bool:
    """The confirmation rule: is the cycle ``path`` (just found) a deadlock?

    Yes when all of its steps are waits on shared locks (the store found it
    atomically with this waiter's registration), or when the previous check
    found the same cycle (``pending``): a cycle through a link (a local
    thread -> thread wait, published from a snapshot) must be seen twice.
    """
    return all(step["kind"] == "lock" for step in path) or pending == cycle_of(path)


class SharedLock(_Introspection):
    """A lock taken through a store shared by processes; see the module.

    Subclasses set ``_kind``, ``_site``, ``_name``, ``reentrant``, ``_inner``
    and the state read by the detectors (``_owner``, ``_inner_owner``,
    ``_count``, ``_acq``, ``_serial``), and implement the backend protocol.
    """

    _shared = True
    #: Seconds between two checks of a blocked waiter.
    _recheck = 0.05
    #: Errors a blocked acquire retries, every ``_retry`` seconds, until its deadline.
    _transient: tuple[type[BaseException], ...] = ()
    _retry = 0.05
    #: Whether a wait woken at its deadline tries once more (a cheap, local try).
    _try_at_deadline = True
    #: Whether ``_inner`` is a thread-level lock taken before the shared one.
    _thread_level = False

    reentrant: bool
    _count: int
    _inner_owner: Optional[ThreadState]

    # ---------------------------------------------------------------- acquire

    def acquire(self, blocking: bool = True, timeout: float = -1) -> Any:
        _check_acquire_args(blocking, timeout)
        ts = current_state()
        if self._owner is ts and self.reentrant:
            self._count += 1
            return self._again()
        forever = blocking and timeout == -1
        if forever and ts.held and settings.lock_order:
            error = _order.note(ts, self)
            if error is not None:
                raise error
        deadline = None if (not blocking or timeout < 0) else _monotonic() + timeout
        # Each take's result is stored from C as it returns (see _primitives.
        # Lock.acquire): whatever asynchronous exception (KeyboardInterrupt, a
        # signal handler's) comes out of a call below, the handler knows what
        # this acquire holds and gives it back.
        got: list[bool] = []  # the thread-level inner lock (_thread_level)
        taken: list[Any] = []  # the shared lock: a grant, or None
        try:
            if self._thread_level:
                got[:] = map(self._inner.acquire, _TRY)
                if not got[0]:
                    if not blocking:
                        return False
                    _waitfor.block_on(ts, self, self._inner, None if timeout < 0 else timeout,
                                      True, got)
                    if not got[-1]:
                        return False
                self._inner_owner = ts
            frame = sys._getframe(1)
            taken[:] = map(self._obtain, (ts,), (blocking,), (deadline,), (frame,))
            grant = taken[0]
            if grant is None:
                if got:
                    self._inner_owner = None
                    del got[:]
                    self._inner.release()
                return False
            self._owner = ts
            self._count = 1
            self._acq = _acquire_site(frame)
            result = self._granted(grant)
            shared = [h for h in ts.held if h is not self and self._same_store(h)]
            ts.held.append(self)
            if forever and shared and settings.lock_order:
                error = self._note_order(shared)
                if error is not None:
                    raise error  # given back below, as after any exception
            return result
        except BaseException:
            try:
                if taken and taken[0] is not None:
                    self._give_back(ts, taken[0])
            finally:
                if got and got[-1]:
                    self._inner_owner = None
                    self._inner.release()
            raise

    def _obtain(self, ts: ThreadState, blocking: bool, deadline: Optional[float],
                frame: Any) -> Any:
        """One try, then (blocking) the wait: a grant, or None."""
        taken: list[Any] = []  # stored from C: see acquire
        try:
            try:
                taken[:] = map(self._try_take, (frame,), (deadline,))
            except self._transient:
                if not blocking:
                    raise
                taken[:] = (None,)  # a blocking acquire retries until its deadline
            if taken[0] is not None or not blocking:
                return taken[0]
        except BaseException:
            if taken and taken[0] is not None:
                self._give_back(ts, taken[0])
            raise
        return self._wait(ts, deadline, frame)

    def _wait(self, ts: ThreadState, deadline: Optional[float], frame: Any) -> Any:
        """Wait for the lock (steps 1-5 of the module's algorithm): a grant, or
        None at the deadline."""
        timed = deadline is not None
        begin_wait(ts, self, timed, _monotonic())
        registered = False
        pending: Optional[frozenset[tuple[str, str]]] = None
        next_check = 0.0
        pauses = 0
        taken: list[Any] = []  # stored from C: see acquire
        try:
            while True:
                doom = ts.doom
                if doom is not None:
                    ts.doom = None
                    raise DeadlockError(str(doom), doom)
                now = _monotonic()
                late = deadline is not None and now >= deadline
                if late and not self._try_at_deadline:
                    return None  # a call ran past it: no other
                try:
                    if now >= next_check and self._checking():
                        registered = True
                        path = self._register_and_check(timed, deadline)
                        next_check = now + self._recheck
                        if path is None:
                            pending = None
                        else:
                            if confirmed(path, pending):
                                self._deadlock(path, frame)
                            pending = cycle_of(path)
                    taken[:] = map(self._try_take, (frame,), (deadline,))
                    if taken[0] is not None:
                        registered = False  # the take dropped the wait record
                        return taken[0]
                    now = _monotonic()
                    if late or (deadline is not None and now >= deadline):
                        return None
                    pause = next_check - now if self._checking() else self._recheck
                    if deadline is not None:
                        pause = min(pause, deadline - now)
                    self._pause(max(pause, 0.0), pauses)
                    pauses += 1
                except self._transient:
                    now = _monotonic()
                    if deadline is not None and now >= deadline:
                        return None
                    pause = self._retry if deadline is None else min(self._retry, deadline - now)
                    time.sleep(max(pause, 0.0))
        except BaseException:
            if taken and taken[0] is not None:
                self._give_back(ts, taken[0])
            raise
        finally:
            end_wait(ts)
            if registered:
                self._unregister()

    def _deadlock(self, path: list[dict[str, Any]], frame: Any) -> None:
        finding = deadlock_finding(path, self._holds(path), self._store_label(), frame)
        if raise_deadlock(finding):
            raise DeadlockError(str(finding), finding)

    # ---------------------------------------------------------------- backend protocol

    def _try_take(self, frame: Any, deadline: Optional[float]) -> Any:
        raise NotImplementedError

    def _register_and_check(self, timed: bool, deadline: Optional[float]
                            ) -> Optional[list[dict[str, Any]]]:
        raise NotImplementedError

    def _unregister(self) -> None:
        raise NotImplementedError

    def _pause(self, seconds: float, n: int) -> None:
        raise NotImplementedError

    def _give_back(self, ts: ThreadState, grant: Any) -> None:
        raise NotImplementedError

    def _note_order(self, shared: list[Any]) -> Optional[BaseException]:
        raise NotImplementedError

    def _granted(self, grant: Any) -> Any:
        raise NotImplementedError

    def _again(self) -> Any:
        raise NotImplementedError

    def _checking(self) -> bool:
        raise NotImplementedError

    def _same_store(self, other: Any) -> bool:
        raise NotImplementedError

    def _holds(self, path: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        raise NotImplementedError

    def _store_label(self) -> str:
        raise NotImplementedError


def documented(function: Callable[..., Any], doc: str) -> Callable[..., Any]:
    """``function`` with another docstring: the same code, so no extra frame
    (``acquire`` reads its caller's frame)."""
    assert isinstance(function, types.FunctionType)
    copy = types.FunctionType(function.__code__, function.__globals__, function.__name__,
                              function.__defaults__, function.__closure__)
    copy.__kwdefaults__ = function.__kwdefaults__
    copy.__doc__ = doc
    return copy
