"""Lock._held_in_with: True while the holder took the Lock with ``with``.

A plain Lock may be released by any thread; one taken by a ``with``
statement is released by its holder's own ``__exit__``. The detector uses the
flag to decide whether "waits for the owner of L" is proof. Every test runs
against both implementations (as test_speedups' ``impl`` does).
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import pytest

import lockwise
from lockwise import _primitives

from .test_speedups import HAVE_C, IMPLS


@pytest.fixture(params=IMPLS)
def impl(request: Any) -> Any:
    """(Lock, RLock) of the pure implementation, then of the C one when built."""
    return request.param


def _line() -> int:
    return sys._getframe(1).f_lineno


def test_with_sets_it_bare_acquire_does_not(impl: Any) -> None:
    Lock = impl[0]
    lock = Lock()
    assert lock._held_in_with is False
    with lock:
        assert lock._held_in_with is True
        assert lock.acquired_at.endswith(f":{_line() - 2}")  # the user's line
    assert lock._held_in_with is False and lock._owner is None
    assert lock.acquire()
    assert lock._held_in_with is False
    lock.release()
    assert lock._held_in_with is False
    assert lock.acquire(timeout=1)  # the slow path
    assert lock._held_in_with is False
    lock.release()
    assert lock.acquire(False)
    assert lock._held_in_with is False
    lock.release()


def test_released_by_another_thread_resets_it(impl: Any) -> None:
    lock = impl[0]()
    lock.__enter__()
    assert lock._held_in_with is True
    t = threading.Thread(target=lock.release)
    t.start()
    t.join(5)
    assert not t.is_alive()
    assert lock._held_in_with is False and not lock.locked()


def test_contended_with_sets_it_on_the_slow_path(impl: Any) -> None:
    lock = impl[0]()
    taken = threading.Event()
    go = threading.Event()
    seen: list[bool] = []

    def contender() -> None:
        taken.set()
        with lock:
            seen.append(lock._held_in_with)

    assert lock.acquire()
    t = threading.Thread(target=contender)
    t.start()
    assert taken.wait(5)
    go.wait(0.05)  # let it block (quiet wait spent, slow path)
    lock.release()
    t.join(5)
    assert not t.is_alive()
    assert seen == [True]
    assert lock._held_in_with is False


@pytest.mark.parametrize("timeout", [0.01, 0])
def test_kept_across_condition_wait(impl: Any, timeout: float) -> None:
    lock = impl[0]()
    cond = lockwise.Condition(lock)
    with cond:
        assert lock._held_in_with is True
        assert cond.wait(timeout) is False
        assert lock._held_in_with is True and lock.owner is threading.current_thread()
        assert lock.acquired_at.endswith(f":{_line() - 2}")  # the waiting line
    assert lock._held_in_with is False
    assert lock.acquire()
    assert cond.wait(timeout) is False
    assert lock._held_in_with is False and lock.owner is threading.current_thread()
    lock.release()


def test_kept_across_a_notified_wait(impl: Any) -> None:
    lock = impl[0]()
    cond = lockwise.Condition(lock)
    ready = threading.Event()
    seen: list[bool] = []

    def waiter() -> None:
        with cond:
            ready.set()
            assert cond.wait(5)
            seen.append(lock._held_in_with)

    t = threading.Thread(target=waiter)
    t.start()
    assert ready.wait(5)
    with cond:
        cond.notify()
    t.join(5)
    assert not t.is_alive()
    assert seen == [True]


def test_semaphore_and_event_take_their_lock_in_with() -> None:
    sem = lockwise.Semaphore(1)
    lock = sem._cond._lock
    assert isinstance(lock, _primitives.Lock)
    with sem._cond:  # as Semaphore.acquire/release and Event.set do
        assert lock._held_in_with is True
    assert lock._held_in_with is False


@pytest.mark.skipif(not HAVE_C, reason="the C accelerator was not built")
def test_read_only_on_the_c_lock() -> None:
    from lockwise import _accel

    lock = _accel.accelerate(_primitives.PureLock, _accel.LockBase)()
    with pytest.raises(AttributeError):
        lock._held_in_with = True
