"""Reporting runs no user code in the detecting thread.

Logging handlers, user listeners, policy callables and a user-replaced
``sys.stderr`` may take the program's own locks: run in the thread that
found a deadlock, they would wait inside lockwise, in the very cycle it
found. They run in lockwise's reporter thread; ``DeadlockError`` is raised
at once and ``lockwise.flush()`` waits for the delivery.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any

import pytest

import lockwise
from lockwise import DeadlockError, _findings

AT_ONCE = 2.0  # seconds: the deadlock is raised well before this


@pytest.fixture(autouse=True)
def _log_lock_order() -> None:
    lockwise.configure(on_lock_order="log")  # the AB/BA rounds invert too


def _deadlock_pair(a: lockwise.Lock, b: lockwise.Lock) -> tuple[list[str], list[threading.Thread]]:
    """AB/BA between two threads; returns who raised, and the threads (started)."""
    barrier = threading.Barrier(2)
    raised: list[str] = []

    def worker(first: lockwise.Lock, second: lockwise.Lock, name: str) -> None:
        with first:
            barrier.wait(5)
            try:
                with second:
                    pass
            except DeadlockError:
                raised.append(name)

    threads = [threading.Thread(target=worker, args=(a, b, "T1"), daemon=True),
               threading.Thread(target=worker, args=(b, a, "T2"), daemon=True)]
    for t in threads:
        t.start()
    return raised, threads


def _join(threads: list[threading.Thread], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    return not any(t.is_alive() for t in threads)


@pytest.mark.timeout(30)
def test_logging_handler_taking_a_deadlocked_lock() -> None:
    a, b = lockwise.Lock(), lockwise.Lock()
    got: list[str] = []
    errors: list[BaseException] = []

    class ConsoleHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            try:
                with a:  # the program's lock, held by a deadlocked thread
                    got.append(record.getMessage())
            except BaseException as exc:
                errors.append(exc)
                raise

    handler = ConsoleHandler(logging.ERROR)
    log = logging.getLogger("lockwise")
    log.addHandler(handler)
    try:
        start = time.monotonic()
        raised, threads = _deadlock_pair(a, b)
        assert _join(threads, AT_ONCE + 5), "hung"
        assert len(raised) == 1
        assert time.monotonic() - start < AT_ONCE
        assert lockwise.flush(10)
    finally:
        log.removeHandler(handler)
    assert errors == []
    assert len(got) == 1 and "deadlock" in got[0]


@pytest.mark.timeout(30)
def test_blocking_listener_does_not_delay_the_raise() -> None:
    release = threading.Event()
    got: list[lockwise.Finding] = []

    def listener(finding: lockwise.Finding) -> None:
        release.wait(10)  # e.g. a listener posting to a slow service
        got.append(finding)

    _findings.add_listener(listener)
    try:
        for _ in range(3):  # later findings queue behind the blocked listener
            raised, threads = _deadlock_pair(lockwise.Lock(), lockwise.Lock())
            assert _join(threads, AT_ONCE), "the deadlock waited for the listener"
            assert len(raised) == 1
        assert len(lockwise.findings("deadlock")) == 3  # recorded at once
        assert got == []
        assert not lockwise.flush(0.05)  # still blocked
        release.set()
        assert lockwise.flush(10)
        assert len([f for f in got if f.kind == "deadlock"]) == 3
    finally:
        release.set()
        _findings.remove_listener(listener)


@pytest.mark.timeout(30)
def test_policy_callable_runs_outside_the_detecting_thread() -> None:
    console = lockwise.Lock()
    seen_in: list[str] = []

    def policy(finding: lockwise.Finding) -> None:
        with console:  # held by the thread that finds the deadlock
            seen_in.append(threading.current_thread().name)

    lockwise.configure(on_deadlock=policy)
    lost = lockwise.Lock()
    owner = threading.Thread(target=lost.acquire, name="Owner")  # exits holding it
    owner.start()
    owner.join(5)

    found = lockwise.Event()  # a wait lockwise sees: the helper is blocked too
    def tell(finding: lockwise.Finding) -> None:
        found.set()

    _findings.add_listener(tell)  # run by the reporter thread

    def hand_off() -> None:  # a Lock may be released by any thread
        found.wait()
        lost.release()

    helper = threading.Thread(target=hand_off, daemon=True, name="Helper")
    try:
        with console:
            helper.start()
            start = time.monotonic()
            # The owner exited and every other thread is blocked: a deadlock.
            # The policy (not "raise") is told and this thread keeps waiting,
            # until the helper, woken by a listener, hands the lock off.
            lost.acquire()  # untimed: the deadlock rules check it
            assert time.monotonic() - start < AT_ONCE
        lost.release()
    finally:
        found.set()
        _findings.remove_listener(tell)
    assert _join([helper], 5)
    assert lockwise.flush(10)
    assert seen_in and threading.current_thread().name not in seen_in


class _LockedStream:
    """A replaced sys.stderr whose write takes one of the program's locks."""

    def __init__(self, lock: lockwise.Lock) -> None:
        self.lock = lock
        self.parts: list[str] = []

    def write(self, text: str) -> int:
        with self.lock:
            self.parts.append(text)
        return len(text)

    def flush(self) -> None:
        pass


@pytest.mark.timeout(30)
def test_replaced_stderr_taking_a_user_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = lockwise.Lock(), lockwise.Lock()
    stream = _LockedStream(a)
    monkeypatch.setattr(sys, "stderr", stream)

    def broken(finding: lockwise.Finding) -> Any:
        raise ValueError("listener bug")  # reported on sys.stderr

    _findings.add_listener(broken)
    try:
        raised, threads = _deadlock_pair(a, b)
        assert _join(threads, AT_ONCE), "hung writing to stderr"
        assert len(raised) == 1
        assert lockwise.flush(10)
    finally:
        _findings.remove_listener(broken)
    assert any("listener bug" in part for part in stream.parts)


@pytest.mark.timeout(30)
def test_session_prints_through_a_stream_taking_a_user_lock() -> None:
    from lockwise import _runner

    a, b = lockwise.Lock(), lockwise.Lock()
    stream = _LockedStream(a)
    session = _runner.Session(_runner.Options(), child=True, stderr=stream)  # type: ignore[arg-type]
    # start() installs and exports LOCKWISE_* (subprocess coverage): undo both
    import os

    saved = dict(os.environ)
    session.start()
    try:
        raised, threads = _deadlock_pair(a, b)
        assert _join(threads, AT_ONCE), "hung printing the report"
        assert len(raised) == 1
        assert lockwise.flush(10)
    finally:
        session.abandon()
        os.environ.clear()
        os.environ.update(saved)
    assert any("lockwise: deadlock" in part for part in stream.parts)


def test_reporter_thread_is_internal() -> None:
    lock = lockwise.Lock()
    with lock, pytest.raises(DeadlockError):
        lock.acquire()
    assert lockwise.flush(5)
    from lockwise import _state

    assert _findings._reporter in _state.internal_threads
    assert lockwise.flush(5)  # nothing queued: returns at once
