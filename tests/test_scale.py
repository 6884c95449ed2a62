"""Waiting costs O(1) per wait, not O(waiters) per tick (issue 19, section 3).

The costs are counted (checks, stall scans, lock-wait reads), not timed, so the
tests hold on a loaded machine; ``benchmarks/bench_scale.py`` has the times.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref
from typing import Any, Callable

import pytest

import lockwise
from lockwise import _aio_wait, _waitfor, aio

pytestmark = pytest.mark.timeout(60)


def _counting(module: Any, name: str, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    original: Callable[..., Any] = getattr(module, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


# ---------------------------------------------------------------- threads


def test_blocked_threads_do_not_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    """100 threads blocked on one Event for 1.5 s: a few checks each, not one
    every check_interval (20 ms: 75 each), and the O(threads) stall scan only
    when a wait changed."""
    checks = _counting(_waitfor, "check", monkeypatch)
    scans = _counting(_waitfor, "_scan", monkeypatch)
    event = lockwise.Event()
    threads = [threading.Thread(target=event.wait, daemon=True) for _ in range(100)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while len(_waitfor.blocked) < 100 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(_waitfor.blocked) >= 100
    checks[0] = scans[0] = 0
    time.sleep(1.5)
    during, scanned = checks[0], scans[0]
    event.set()
    for thread in threads:
        thread.join(10)
    assert not any(t.is_alive() for t in threads)
    assert during < 100 * 8, during  # polling every 20 ms: ~7,500
    # No thread changed its wait: a scan's verdict holds for _RESCAN (0.5 s),
    # so about 3 fall due in 1.5 s. Threads whose periodic checks land while
    # the first of a round runs (without the GIL, or while it is descheduled
    # under load) scan too: 21 were seen on 3.13t, pure, at load 7. Polling
    # would be one per check (thousands).
    assert scanned <= 60, scanned


def test_stall_formed_by_an_exit_is_found_after_backing_off(runner: Any) -> None:
    """A waiter that has backed off still finds a freeze formed without a new
    wait (the only thread that could set the Event exits), in about a second."""
    event = lockwise.Event()
    def setter_that_leaves() -> None:
        time.sleep(2.0)  # the waiter's checks have backed off to their longest

    def waiter() -> None:
        event.wait()

    runner.start(waiter, "waiter")
    leaver = threading.Thread(target=setter_that_leaves, daemon=True)
    leaver.start()
    start = time.monotonic()
    leaver.join(10)
    runner.join(10, untimed=True)
    elapsed = time.monotonic() - start
    assert isinstance(runner.errors.get("waiter"), lockwise.DeadlockError)
    assert elapsed < 2.0 + 2.5, elapsed


def test_doomed_lock_waiter_that_backed_off_raises(runner: Any) -> None:
    """The stall rule's victim may be a thread waiting long on a Lock it holds
    (bare acquire): it is woken by its next check, within its longest sleep."""
    lock = lockwise.Lock()
    ready = threading.Event()

    def self_waiter() -> None:
        lock.acquire()
        ready.set()
        lock.acquire()  # waits for itself; a hand-off could end it while others run

    runner.start(self_waiter, "self-waiter")
    assert ready.wait(10)
    time.sleep(1.5)  # its checks back off while the main thread runs
    start = time.monotonic()
    runner.join(10, untimed=True)  # now nobody is left to run
    assert isinstance(runner.errors.get("self-waiter"), lockwise.DeadlockError)
    assert time.monotonic() - start < 3.0


# ---------------------------------------------------------------- asyncio


def test_semaphore_released_by_other_tasks_keeps_no_finished_holders() -> None:
    async def main() -> tuple[int, list[Any]]:
        sem = aio.Semaphore(0)
        refs: list[Any] = []

        async def acquirer() -> None:
            await sem.acquire()

        async def releaser(n: int) -> None:
            for _ in range(n):
                await asyncio.sleep(0)
                sem.release()

        tasks = [asyncio.ensure_future(acquirer()) for _ in range(500)]
        refs.extend(weakref.ref(t) for t in tasks)
        await asyncio.gather(releaser(500), *tasks)
        del tasks
        return len(sem.holders), refs

    held, refs = asyncio.run(main())
    gc.collect()
    # Kept before: all 500. A release that came before any acquire ended no
    # holding, so one acquirer may stay recorded; none more.
    assert held <= 1, held
    assert sum(r() is not None for r in refs) <= held


def _lock_waiters_behind_a_thread(n: int) -> None:
    """n tasks queued on one Lock whose holders each await a thread (the loop
    goes idle, with another thread that may run, once per hold)."""
    async def main() -> None:
        lock = aio.Lock()
        loop = asyncio.get_running_loop()

        async def job() -> None:
            async with lock:
                await loop.run_in_executor(None, lambda: None)

        # No wait_for: its timer would keep the loop from going idle. The
        # executor always completes; pytest-timeout bounds the test.
        await asyncio.gather(*(job() for _ in range(n)))

    asyncio.run(main())


def test_idle_recheck_costs_o1_per_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    reads = _counting(_aio_wait, "lock_wait", monkeypatch)
    _lock_waiters_behind_a_thread(100)
    small = reads[0]
    reads[0] = 0
    _lock_waiters_behind_a_thread(400)
    large = reads[0]
    # Linear: about 4x. Reading every waiter at every idle iteration: about 16x.
    assert large < 8 * max(small, 1), (small, large)


def test_a_stuck_lock_wait_among_many_is_still_raised() -> None:
    """One representative per lock: a cycle behind a long queue is still found."""
    async def main() -> list[Any]:
        a, b = aio.Lock(name="a"), aio.Lock(name="b")

        async def one(first: Any, second: Any) -> None:
            async with first:
                await asyncio.sleep(0.05)
                async with second:
                    pass

        async def queued(lock: Any) -> None:
            await asyncio.sleep(0.01)
            async with lock:
                pass

        jobs = [one(a, b), one(b, a)] + [queued(a) for _ in range(50)]
        return await asyncio.gather(*jobs, return_exceptions=True)

    results = asyncio.run(main())
    assert any(isinstance(r, lockwise.DeadlockError) for r in results[:2])
