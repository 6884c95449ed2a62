"""The interpreter's own ``test.test_asyncio.test_locks``, run with lockwise.aio's types.

The stdlib tests create ``asyncio.Lock()`` etc. directly, so each test runs with
``asyncio.Lock``/``Condition``/``Semaphore``/``BoundedSemaphore`` (and
``asyncio.locks.*``) patched to lockwise's classes, exactly as
``lockwise.install()`` does. Event and Barrier have no lockwise version (Barrier
runs on the patched Condition on 3.11+, so its tests run too). Tests that do not
apply are listed in ``NOT_APPLICABLE`` with the reason.
"""

from __future__ import annotations

import sys
import unittest
from typing import Any

import pytest

stdlib = pytest.importorskip("test.test_asyncio.test_locks",
                             reason="this Python ships no test.test_asyncio")

from lockwise import aio  # noqa: E402

#: test name -> why it does not apply to lockwise's types.
NOT_APPLICABLE: dict[str, str] = {}


class _Patched:
    def setUp(self) -> None:
        aio._patch(True)
        self.addCleanup(aio._patch, False)  # type: ignore[attr-defined]
        super().setUp()  # type: ignore[misc]


def _make(base: Any) -> Any:
    cls = type(f"Lockwise{base.__name__}", (_Patched, base), {"__module__": __name__})
    for name in list(vars(base)):
        if name in NOT_APPLICABLE:
            setattr(cls, name, unittest.skip(NOT_APPLICABLE[name])(getattr(base, name)))
    return cls


TestLock = _make(stdlib.LockTests)
TestCondition = _make(stdlib.ConditionTests)
TestSemaphore = _make(stdlib.SemaphoreTests)
if hasattr(stdlib, "BarrierTests"):  # 3.11+
    TestBarrier = _make(stdlib.BarrierTests)


def test_patched_types_are_lockwise() -> None:
    aio._patch(True)
    try:
        import asyncio

        assert type(asyncio.Lock()) is aio.Lock if sys.version_info >= (3, 10) else True
    finally:
        aio._patch(False)


def teardown_module() -> None:
    tear = getattr(stdlib, "tearDownModule", None)
    if tear is not None:
        tear()
