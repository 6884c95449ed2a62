"""The standard library's own lock tests, run with lockwise's types (proof of drop-in)."""

from __future__ import annotations

import pytest

lock_tests = pytest.importorskip("test.lock_tests", reason="this Python ships no test.lock_tests")

import lockwise  # noqa: E402


class TestLock(lock_tests.LockTests):  # type: ignore[misc,name-defined]
    locktype = staticmethod(lockwise.Lock)


class TestRLock(lock_tests.RLockTests):  # type: ignore[misc,name-defined]
    locktype = staticmethod(lockwise.RLock)


class TestEvent(lock_tests.EventTests):  # type: ignore[misc,name-defined]
    eventtype = staticmethod(lockwise.Event)


class TestCondition(lock_tests.ConditionTests):  # type: ignore[misc,name-defined]
    condtype = staticmethod(lockwise.Condition)


class TestSemaphore(lock_tests.SemaphoreTests):  # type: ignore[misc,name-defined]
    semtype = staticmethod(lockwise.Semaphore)


class TestBoundedSemaphore(lock_tests.BoundedSemaphoreTests):  # type: ignore[misc,name-defined]
    semtype = staticmethod(lockwise.BoundedSemaphore)


class TestBarrier(lock_tests.BarrierTests):  # type: ignore[misc,name-defined]
    barriertype = staticmethod(lockwise.Barrier)
