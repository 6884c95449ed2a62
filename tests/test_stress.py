"""Mutual exclusion is never weakened: many threads, exact counters."""

from __future__ import annotations

import threading

import pytest

import lockwise

from .conftest import Runner

THREADS = 8
ROUNDS = 3000


def hammer(enter: object, leave: object) -> int:
    counter = [0]
    inside = [0]
    overlaps = [0]

    def work() -> None:
        for _ in range(ROUNDS):
            enter()  # type: ignore[operator]
            inside[0] += 1
            if inside[0] != 1:
                overlaps[0] += 1
            value = counter[0]
            counter[0] = value + 1
            inside[0] -= 1
            leave()  # type: ignore[operator]

    runner = Runner()
    for i in range(THREADS):
        runner.start(work, f"H{i}")
    runner.join(60)
    assert not runner.errors, runner.errors
    assert overlaps[0] == 0
    return counter[0]


@pytest.mark.parametrize("factory", [lockwise.Lock, lockwise.RLock,
                                     lambda: lockwise.Semaphore(1),
                                     lambda: lockwise.BoundedSemaphore(1)])
def test_exact_counter(factory: object) -> None:
    lock = factory()  # type: ignore[operator]
    assert hammer(lock.acquire, lock.release) == THREADS * ROUNDS
    assert lockwise.findings() == []


def test_exact_counter_with_condition_handoff() -> None:
    cond = lockwise.Condition()
    slots = [0]
    produced = consumed = 0
    total = 4000

    def producer() -> None:
        nonlocal produced
        for _ in range(total):
            with cond:
                cond.wait_for(lambda: slots[0] < 4, timeout=10)
                slots[0] += 1
                produced += 1
                cond.notify_all()

    def consumer() -> None:
        nonlocal consumed
        for _ in range(total // 2):
            with cond:
                cond.wait_for(lambda: slots[0] > 0, timeout=10)
                slots[0] -= 1
                consumed += 1
                cond.notify_all()

    runner = Runner()
    runner.start(producer, "P")
    runner.start(consumer, "C1")
    runner.start(consumer, "C2")
    runner.join(60)
    assert not runner.errors
    assert produced == consumed == total and slots[0] == 0
    assert lockwise.findings() == []


def test_contended_nested_rlocks_under_install() -> None:
    with lockwise.installed():
        a, b = threading.RLock(), threading.RLock()
    total = [0]

    def work() -> None:
        for _ in range(1000):
            with a, b, a:
                total[0] += 1

    runner = Runner()
    for i in range(6):
        runner.start(work, f"N{i}")
    runner.join(60)
    assert total[0] == 6000 and not runner.errors
    assert lockwise.findings() == []
