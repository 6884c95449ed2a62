"""asyncio: owner tasks, task deadlocks, lock order and mixed thread/async code."""

from __future__ import annotations

import asyncio
import threading
import warnings
from typing import Any, Awaitable, Callable

import pytest

import lockwise
from lockwise import aio

Scenario = Callable[[], Awaitable[Any]]


def run(scenario: Scenario) -> Any:
    """Run ``scenario`` in its own task, with nothing else on the loop.

    Not bounded by anything on the loop: a timer that may cancel the scenario
    makes every freeze in it unprovable, so no DeadlockError (see
    lockwise.aio). pytest-timeout (SIGALRM, not a wake-up) bounds the test.
    """

    async def main() -> Any:
        return await asyncio.ensure_future(scenario())

    return asyncio.run(main())


@pytest.fixture(autouse=True)
def _clean() -> Any:
    lockwise.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lockwise.PotentialDeadlockWarning)
        yield
    lockwise.reset()


def kinds() -> list[str]:
    return [f.kind for f in lockwise.findings()]


# ---------------------------------------------------------------- deadlocks


def test_reacquire_held_lock_raises() -> None:
    async def main() -> None:
        lock = aio.Lock()
        async with lock, lock:
            pass

    with pytest.raises(lockwise.DeadlockError) as info:
        run(main)
    assert "waits for itself" in str(info.value)
    assert info.value.finding is not None and info.value.finding.kind == "deadlock"


def test_parent_holding_lock_awaits_child_that_needs_it() -> None:
    async def main() -> str:
        lock = aio.Lock(name="state")

        async def child() -> None:
            async with lock:
                pass

        async with lock:
            task = asyncio.ensure_future(child())
            with pytest.raises(lockwise.DeadlockError) as info:
                await task
        assert "awaits task" in str(info.value)
        assert "state" in str(info.value)
        return "finished"

    assert run(main) == "finished"


def test_child_blocked_first_then_parent_awaits_is_found_by_recheck() -> None:
    async def main() -> None:
        lock = aio.Lock()
        started = asyncio.Event()

        async def child() -> None:
            started.set()
            async with lock:
                pass

        async with lock:
            task = asyncio.ensure_future(child())
            await started.wait()
            await asyncio.sleep(0)  # the child is queued on the lock now
            assert task in lock.waiters
            with pytest.raises(lockwise.DeadlockError):
                await task

    run(main)


def test_gather_and_wait_for_without_timeout_are_dependencies() -> None:
    async def main() -> None:
        lock = aio.Lock()

        async def child() -> None:
            async with lock:
                pass

        async with lock:
            with pytest.raises(lockwise.DeadlockError):
                await asyncio.gather(child())
        async with lock:
            with pytest.raises(lockwise.DeadlockError):
                await asyncio.wait_for(asyncio.ensure_future(child()), None)

    run(main)


def test_two_tasks_opposite_order() -> None:
    async def main() -> list[Any]:
        a, b = aio.Lock(name="a"), aio.Lock(name="b")
        ea, eb = asyncio.Event(), asyncio.Event()

        async def one() -> None:
            async with a:
                ea.set()
                await eb.wait()
                async with b:
                    pass

        async def two() -> None:
            async with b:
                eb.set()
                await ea.wait()
                async with a:
                    pass

        return await asyncio.gather(one(), two(), return_exceptions=True)

    results = run(main)
    errors = [r for r in results if isinstance(r, lockwise.DeadlockError)]
    assert len(errors) == 1 and results.count(None) == 1
    assert "wait for each other in a cycle" in str(errors[0])
    assert kinds().count("deadlock") == 1 and "lock-order" in kinds()


def test_ring_of_three() -> None:
    async def main() -> list[Any]:
        locks = [aio.Lock(name=f"L{i}") for i in range(3)]
        held = [asyncio.Event() for _ in range(3)]

        async def worker(i: int) -> None:
            async with locks[i]:
                held[i].set()
                for e in held:
                    await e.wait()
                async with locks[(i + 1) % 3]:
                    pass

        return await asyncio.gather(*(worker(i) for i in range(3)), return_exceptions=True)

    results = run(main)
    assert sum(isinstance(r, lockwise.DeadlockError) for r in results) == 1
    assert results.count(None) == 2
    finding = lockwise.findings("deadlock")[0]
    assert len(finding.threads) == 3


def test_policy_warn_does_not_raise_but_records() -> None:
    previous = lockwise.configure(on_deadlock="log")
    try:
        async def main() -> str:
            lock = aio.Lock()
            await lock.acquire()
            waiter = asyncio.ensure_future(lock.acquire())
            await asyncio.sleep(0)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            lock.release()
            return "ok"

        # the self-wait here is in another task: a plain wait, not a deadlock
        assert run(main) == "ok"
        assert kinds() == []
    finally:
        lockwise.configure(**previous)


# ---------------------------------------------------------------- cancellation


def test_cancelled_waiter_leaves_graph_and_no_lost_wakeup() -> None:
    async def main() -> None:
        lock = aio.Lock()
        await lock.acquire()
        first = asyncio.ensure_future(lock.acquire())
        second = asyncio.ensure_future(lock.acquire())
        await asyncio.sleep(0)
        assert lock.waiters == [first, second]
        first.cancel()
        await asyncio.sleep(0)
        assert lock.waiters == [second]
        lock.release()
        assert await second is True
        assert lock.owner is second
        assert not aio._aio_wait.states.get(first)  # its state went with the task
        lock.release()
        assert not lock.locked()

    run(main)


def test_cancelled_deadlock_participant_breaks_cycle_without_report() -> None:
    async def main() -> None:
        a, b = aio.Lock(), aio.Lock()
        ea, eb = asyncio.Event(), asyncio.Event()

        async def one() -> None:
            async with a:
                ea.set()
                await eb.wait()
                await asyncio.sleep(3600)  # would take b; cancelled first

        async def two() -> None:
            async with b:
                eb.set()
                await ea.wait()
                async with a:
                    pass

        t1 = asyncio.ensure_future(one())
        t2 = asyncio.ensure_future(two())
        await ea.wait()
        await eb.wait()
        await asyncio.sleep(0)
        t1.cancel()
        await t2
        assert t1.cancelled()

    run(main)
    assert kinds() == []


# ---------------------------------------------------------------- no false alarms


def test_no_findings_for_safe_patterns() -> None:
    async def main() -> None:
        a, b, gate = aio.Lock(name="a"), aio.Lock(name="b"), aio.Lock(name="gate")

        async def consistent() -> None:
            for _ in range(5):
                async with a:
                    await asyncio.sleep(0)
                    async with b:
                        await asyncio.sleep(0)

        await asyncio.gather(*(consistent() for _ in range(4)))

        accounts = [aio.Lock() for _ in range(4)]  # one site: instances

        async def transfer(x: int, y: int) -> None:
            first, second = sorted((x, y))
            async with accounts[first]:
                await asyncio.sleep(0)
                async with accounts[second]:
                    pass

        await asyncio.gather(transfer(0, 1), transfer(1, 0), transfer(3, 2), transfer(2, 3))

        async def gated(x: Any, y: Any) -> None:
            async with gate, x, y:
                await asyncio.sleep(0)

        g1, g2 = aio.Lock(name="g1"), aio.Lock(name="g2")
        await asyncio.gather(gated(g1, g2), gated(g2, g1))

        async def backoff(x: Any, y: Any) -> None:
            while True:
                async with x:
                    if not y.locked():
                        # "try-lock": asyncio has no acquire(blocking=False); an
                        # uncontended acquire that cannot wait is the analogue
                        await y.acquire()
                        y.release()
                        return
                await asyncio.sleep(0)

        c, d = aio.Lock(name="c"), aio.Lock(name="d")
        await asyncio.gather(backoff(c, d), backoff(c, d))

        cond = aio.Condition()
        items: list[int] = []

        async def consumer() -> int:
            async with cond:
                await cond.wait_for(lambda: bool(items))
                return items.pop()

        async def producer() -> None:
            async with cond:
                items.append(1)
                cond.notify()

        got = await asyncio.gather(consumer(), producer())
        assert got[0] == 1

        e = aio.Lock(name="e")

        async def timed_out() -> None:
            async with e:
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(e.acquire(), 0.01)

        await timed_out()

        async def holder_with_timeout() -> None:
            async with e:
                child = asyncio.ensure_future(e.acquire())
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(child), 0.01)
                child.cancel()

        await holder_with_timeout()

    run(main)
    assert kinds() == [], [f.summary for f in lockwise.findings()]


def test_semaphore_pool_is_not_a_deadlock() -> None:
    async def main() -> int:
        sem = aio.Semaphore(2)
        done = 0

        async def worker() -> None:
            nonlocal done
            async with sem:
                await asyncio.sleep(0)
                done += 1

        await asyncio.gather(*(worker() for _ in range(10)))
        return done

    assert run(main) == 10
    assert kinds() == []


def test_semaphore_holder_awaiting_waiter_deadlocks() -> None:
    async def main() -> None:
        sem = aio.BoundedSemaphore(1)

        async def child() -> None:
            async with sem:
                pass

        async with sem:
            assert sem.holders == [asyncio.current_task()]
            with pytest.raises(lockwise.DeadlockError):
                await asyncio.ensure_future(child())

    run(main)


# ---------------------------------------------------------------- lock order


def test_opposite_order_run_one_after_the_other_is_reported() -> None:
    async def main() -> None:
        a, b = aio.Lock(name="inbox"), aio.Lock(name="outbox")

        async def forward() -> None:
            async with a, b:
                pass

        async def backward() -> None:
            async with b, a:
                pass

        await asyncio.ensure_future(forward())
        await asyncio.ensure_future(backward())

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(main)
    finding = lockwise.findings("lock-order")[0]
    assert "outbox -> inbox -> outbox" in finding.summary
    assert any(issubclass(w.category, lockwise.PotentialDeadlockWarning) for w in caught)
    assert any(name.startswith("Task-") for name in finding.threads)
    assert "<- waits for Task-" in finding.text


def test_same_site_instances_transfer() -> None:
    async def main() -> None:
        accounts = [aio.Lock() for _ in range(2)]

        async def transfer(x: Any, y: Any) -> None:
            async with x, y:
                pass

        await transfer(accounts[0], accounts[1])
        await transfer(accounts[1], accounts[0])

    run(main)
    assert lockwise.findings("lock-order")[0].details["level"] == "instance"


def test_lock_order_raise_policy() -> None:
    previous = lockwise.configure(on_lock_order="raise")
    try:
        async def main() -> None:
            a, b = aio.Lock(), aio.Lock()
            async with a, b:
                pass
            async with b:
                with pytest.raises(lockwise.PotentialDeadlockError):
                    async with a:
                        pass
            assert not a.locked()

        run(main)
    finally:
        lockwise.configure(**previous)


# ---------------------------------------------------------------- introspection


def test_introspection_and_repr() -> None:
    async def main() -> None:
        lock = aio.Lock(name="db")
        assert lock.owner is None and lock.acquired_at is None
        async with lock:
            assert lock.owner is asyncio.current_task()
            assert lock.name == "db"
            assert lock.acquired_at is not None and "test_aio.py" in lock.acquired_at
            text = repr(lock)
            assert "'db'" in text and "owner=Task-" in text and text.endswith("[locked]>")
        assert repr(lock).endswith("[unlocked]>")
        cond = aio.Condition()
        async with cond:
            assert cond.owner is asyncio.current_task()
        assert isinstance(lock, asyncio.Lock)

    run(main)


# ---------------------------------------------------------------- install


def test_install_patches_asyncio() -> None:
    original = asyncio.Lock
    with lockwise.installed():
        assert asyncio.Lock is aio.Lock and asyncio.locks.Lock is aio.Lock
        assert asyncio.Condition is aio.Condition
        assert asyncio.Semaphore is aio.Semaphore
        assert asyncio.BoundedSemaphore is aio.BoundedSemaphore

        async def main() -> None:
            lock = asyncio.Lock()
            async with lock, lock:
                pass

        with pytest.raises(lockwise.DeadlockError):
            run(main)
    assert asyncio.Lock is original


# ---------------------------------------------------------------- mixed code


def test_thread_lock_held_across_await_is_reported() -> None:
    errors: list[Any] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _l, ctx: errors.append(ctx))
        tlock = lockwise.Lock(name="cache")
        with tlock:
            await asyncio.sleep(0)

    run(main)
    finding = lockwise.findings("lock-order")[0]
    assert finding.details["rule"] == "held-across-await"
    assert "cache" in finding.summary
    assert errors == []  # policy "warn" (ignored here) does not go to the handler


def test_thread_lock_held_briefly_in_a_task_is_fine() -> None:
    async def main() -> None:
        tlock = lockwise.Lock()
        for _ in range(3):
            with tlock:
                pass
            await asyncio.sleep(0)

    run(main)
    assert kinds() == []


def test_blocking_thread_acquire_on_loop_thread_raises() -> None:
    async def main() -> None:
        tlock = lockwise.Lock(name="registry")
        holding = asyncio.Event()

        async def holder() -> None:
            with tlock:
                holding.set()
                await asyncio.sleep(0.05)

        task = asyncio.ensure_future(holder())
        await holding.wait()
        with pytest.raises(lockwise.DeadlockError) as info:
            tlock.acquire()  # blocks the loop's thread: the holder can never resume
        assert "blocks it on registry" in str(info.value)
        assert info.value.finding is not None
        assert info.value.finding.details["rule"] == "loop"
        await task

    run(main)


def test_detector_survives_internal_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise ValueError("boom")

    monkeypatch.setattr(aio._aio_wait, "dead_tasks", broken)

    async def main() -> str:
        lock = aio.Lock()
        await lock.acquire()
        waiter = asyncio.ensure_future(lock.acquire())
        # Awaiting a future (not sleep(0), which leaves the holder ready to
        # run and the check on its O(1) path), so the waiter's check runs.
        await asyncio.sleep(0.01)
        lock.release()
        await waiter
        lock.release()
        return "ok"

    assert run(main) == "ok"
    assert any("asyncio deadlock check" in m for m in lockwise._findings.internal_errors())


def test_other_thread_unaffected() -> None:
    # a thread's self-wait outside any loop keeps the core's rules
    lock = lockwise.Lock()
    lock.acquire()
    t = threading.Thread(target=lock.release)
    t.start()
    t.join(5)
    assert not lock.locked()
