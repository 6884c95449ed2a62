"""The CPython internals lockwise relies on (docs/python-versions.md).

Two kinds of test:

* canaries: each internal is where lockwise expects it on the running
  interpreter, so a CPython that moves one fails here, by name, instead of
  silently detecting less;
* degradation: with an internal made absent (monkeypatch), lockwise keeps
  working, raises nothing into user code and reports no false deadlock.
"""

from __future__ import annotations

import _thread
import asyncio
import sys
import threading
import warnings
from typing import Any

import pytest

import lockwise
from lockwise import _aio_wait, _condition, _imports, _install, _order, _state, _waitfor, aio


def test_internals_are_where_lockwise_expects_them() -> None:
    assert isinstance(threading._active, dict)  # type: ignore[attr-defined]
    assert isinstance(threading._limbo, dict)  # type: ignore[attr-defined]
    assert _state.REGISTRIES
    assert callable(threading._shutdown)  # type: ignore[attr-defined]
    assert callable(threading._register_atexit)  # type: ignore[attr-defined]
    assert callable(asyncio.base_events.BaseEventLoop._run_once)  # type: ignore[attr-defined]
    assert aio._original_run_once is not None
    assert callable(asyncio.events._get_running_loop)
    lock = asyncio.Lock()
    assert lock._locked is False  # type: ignore[attr-defined]
    assert hasattr(lock, "_waiters") and callable(lock._wake_up_first)  # type: ignore[attr-defined]
    assert callable(_thread.allocate_lock()._at_fork_reinit)  # type: ignore[attr-defined]
    assert callable(sys._current_frames)
    if sys.version_info < (3, 13):
        assert hasattr(threading.Thread, "_wait_for_tstate_lock")
    assert _order._ORPHAN_REFCOUNT == 2  # 3.10-3.13 and 3.13t
    assert _condition._SEMAPHORE_LAYOUT and _condition._BOUNDED_LAYOUT
    assert _condition._EVENT_LAYOUT
    assert _condition._CONDITION_EXPORTS_LOCKED is (sys.version_info >= (3, 14))
    assert _install._RLOCK_TAKES_ARGUMENTS is (sys.version_info < (3, 15))
    # importlib's module locks (owner, count, wakeup; _blocking_on: one entry
    # per thread before 3.12, a list after).
    assert _imports.SUPPORTED
    assert _imports._SINGLE_ENTRY is (sys.version_info < (3, 12))


# -- sys.getrefcount: the orphan rule calibrates, or drops nothing ------------


def test_orphan_is_dropped_with_the_measured_count() -> None:
    ts = _state.current_state()
    kept = lockwise.Lock()
    held = [lockwise.Lock(), kept]
    saved = ts.held
    ts.held = held
    try:
        _order._drop_orphans(ts)
        assert ts.held == [kept]
    finally:
        ts.held = saved


def test_orphans_are_kept_when_the_count_cannot_be_measured(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_order, "_ORPHAN_REFCOUNT", 0)
    ts = _state.current_state()
    saved = ts.held
    ts.held = [lockwise.Lock()]
    try:
        _order._drop_orphans(ts)
        assert len(ts.held) == 1
    finally:
        ts.held = saved


def test_calibration_refuses_a_refcount_that_does_not_count(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_order, "_refcount_at", lambda held, i: 1)  # always 1
    assert _order._calibrate_orphan_refcount() == 0


# -- RLock's arguments: 3.15 rejects them ------------------------------------


def test_installed_rlock_rejects_arguments_where_cpython_does(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_install, "_RLOCK_TAKES_ARGUMENTS", False)
    with lockwise.installed():
        with pytest.raises(TypeError):
            threading.RLock(1)
        lock = threading.RLock()
        with lock:
            assert lock._is_owned()  # type: ignore[attr-defined]


def test_installed_rlock_ignores_arguments_where_cpython_does(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_install, "_RLOCK_TAKES_ARGUMENTS", True)
    with lockwise.installed(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lock = threading.RLock(1)
    with lock:
        pass
    deprecated = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert bool(deprecated) is (sys.version_info >= (3, 13))


# -- Condition.locked (3.14) and the constructors' layouts --------------------


@pytest.mark.parametrize("exports", [True, False])
def test_condition_exports_locked_as_threading_does(monkeypatch: pytest.MonkeyPatch,
                                                    exports: bool) -> None:
    monkeypatch.setattr(_condition, "_CONDITION_EXPORTS_LOCKED", exports)
    cond = lockwise.Condition()
    assert ("locked" in vars(cond)) is exports
    if exports:
        assert cond.locked() is False  # type: ignore[attr-defined]
        with cond:
            assert cond.locked() is True  # type: ignore[attr-defined]


def test_condition_matches_this_pythons_threading_condition() -> None:
    assert ("locked" in vars(lockwise.Condition())) is ("locked" in vars(threading.Condition()))


def test_unknown_layouts_use_threadings_own_constructors(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for flag in ("_SEMAPHORE_LAYOUT", "_BOUNDED_LAYOUT", "_EVENT_LAYOUT"):
        monkeypatch.setattr(_condition, flag, False)
    sem = lockwise.Semaphore(2)
    bounded = lockwise.BoundedSemaphore(1)
    event = lockwise.Event()
    for obj in (sem, bounded, event):
        assert isinstance(obj._cond, lockwise.Condition)  # type: ignore[attr-defined]
    assert sem.acquire() and sem.acquire() and not sem.acquire(blocking=False)
    sem.release()
    with bounded:
        pass
    with pytest.raises(ValueError):
        bounded.release()
    with pytest.raises(ValueError):
        lockwise.Semaphore(-1)
    assert not event.wait(0.01)
    event.set()
    assert event.wait()


# -- threading._active / _limbo missing: name threads, detect no stall --------


@pytest.fixture
def no_registries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_state, "_active", None)
    monkeypatch.setattr(_state, "_limbo", None)


@pytest.mark.usefixtures("no_registries")
def test_threads_are_named_without_the_registries() -> None:
    assert _state.registered_thread(threading.get_ident()) is threading.current_thread()
    assert _state.registered_thread(-1) is None
    lock = lockwise.Lock()
    with lock:
        assert lock.owner is threading.current_thread()


@pytest.mark.usefixtures("no_registries")
def test_stall_rule_stays_silent_without_the_registries() -> None:
    assert _state.threads_starting()
    assert _state.threads_registered() == 0
    assert _waitfor._may_all_be_blocked() is False
    assert _waitfor._scan() is None
    assert _aio_wait._threads_may_run() is True


@pytest.mark.usefixtures("no_registries")
def test_cycle_is_still_found_without_the_registries() -> None:
    lock = lockwise.Lock()
    with lock, pytest.raises(lockwise.DeadlockError):
        lock.acquire()


# -- BaseEventLoop._run_once missing: loops run unhooked ----------------------


def test_loops_run_unhooked_without_run_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPython without ``_run_once``: lockwise never patches the loop class."""
    base: Any = asyncio.base_events.BaseEventLoop
    aio.track_loops(False)
    plain = base._run_once
    monkeypatch.setattr(aio, "_original_run_once", None)
    try:
        aio.track_loops(True)
        assert base._run_once is plain

        async def main() -> int:
            lock = aio.Lock()
            async with lock:
                await asyncio.sleep(0)
            return 1

        assert asyncio.run(main()) == 1
    finally:
        monkeypatch.undo()
        aio.track_loops(True)
    assert base._run_once is aio._run_once


# -- importlib's module locks: unknown layout, nothing patched ----------------


def test_module_locks_left_alone_when_their_layout_is_unknown(
        monkeypatch: pytest.MonkeyPatch) -> None:
    original = _imports._ModuleLock.acquire
    monkeypatch.setattr(_imports, "SUPPORTED", False)
    lockwise.install()
    try:
        assert _imports._ModuleLock.acquire is original
        assert not _imports.is_patched()
        import json  # noqa: F401  (imports work)
    finally:
        lockwise.uninstall()
    assert _imports._ModuleLock.acquire is original
