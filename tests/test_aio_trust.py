"""asyncio: no DeadlockError where a wake-up may come from outside lockwise's view,
and every real, provable deadlock raised (issue 19, sections 1 and 2).

Programs that finish under plain asyncio are bounded by ``asyncio.wait_for`` on
a task of their own. Programs that must raise cannot be bounded by anything on
their loop (a timer that may cancel them makes the freeze unprovable, by design):
pytest-timeout (SIGALRM, which lockwise does not count as a wake-up) bounds them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import sys
import threading
import time
import warnings
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest

import lockwise
from lockwise import _findings, aio

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(autouse=True)
def _clean() -> Any:
    lockwise.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lockwise.PotentialDeadlockWarning)
        yield
    lockwise.reset()


def finishes(scenario: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> Any:
    """Run a program that must finish; a regression fails (timeout), never hangs."""

    async def bounded() -> Any:
        return await asyncio.wait_for(asyncio.ensure_future(scenario()), timeout)

    return asyncio.run(bounded())


def kinds() -> list[str]:
    return [f.kind for f in lockwise.findings()]


def deadlocks() -> list[Any]:
    return lockwise.findings("deadlock")


# ------------------------------------------- 1. a lock released by a non-owner


def test_timer_releases_a_lock_its_owner_waits_for() -> None:
    async def main() -> str:
        lock = aio.Lock()
        await lock.acquire()
        asyncio.get_running_loop().call_later(0.05, lock.release)
        await lock.acquire()  # released by the timer: a hand-off
        lock.release()
        return "ok"

    assert finishes(main) == "ok"
    assert deadlocks() == []


def test_another_task_hands_the_lock_off() -> None:
    async def main() -> str:
        lock = aio.Lock()
        await lock.acquire()

        async def releaser() -> None:
            await asyncio.sleep(0.05)
            lock.release()

        task = asyncio.ensure_future(releaser())
        await lock.acquire()
        await task
        lock.release()
        return "ok"

    assert finishes(main) == "ok"
    assert deadlocks() == []


def test_ready_task_hands_the_lock_off() -> None:
    # own shape: the releasing task is only scheduled (no timer at all)
    async def main() -> str:
        lock = aio.Lock()
        await lock.acquire()

        async def releaser() -> None:
            lock.release()

        task = asyncio.ensure_future(releaser())
        await lock.acquire()
        await task
        lock.release()
        return "ok"

    assert finishes(main) == "ok"
    assert deadlocks() == []


def test_owner_awaits_child_while_a_callback_releases() -> None:
    async def main() -> str:
        lock = aio.Lock()
        await lock.acquire()

        async def child() -> str:
            async with lock:
                return "child"

        asyncio.get_running_loop().call_later(0.05, lock.release)
        return await asyncio.ensure_future(child())

    assert finishes(main) == "child"
    assert deadlocks() == []


def test_thread_releases_via_call_soon_threadsafe() -> None:
    # own shape: the release comes from a thread, through the loop
    async def main() -> str:
        lock = aio.Lock()
        loop = asyncio.get_running_loop()
        await lock.acquire()

        def later() -> None:
            time.sleep(0.05)
            loop.call_soon_threadsafe(lock.release)

        thread = threading.Thread(target=later)
        thread.start()
        await lock.acquire()
        lock.release()
        thread.join(5)
        return "ok"

    assert finishes(main) == "ok"
    assert deadlocks() == []


# ------------------------------------- 1. cancellations lockwise cannot decode


def _parent_awaits_child(arm: Callable[[asyncio.Task[Any]], Any]) -> Callable[[], Awaitable[str]]:
    async def main() -> str:
        lock = aio.Lock()

        async def child() -> None:
            async with lock:
                pass

        async def parent() -> str:
            async with lock:
                task = asyncio.ensure_future(child())
                try:
                    await task
                except asyncio.CancelledError:
                    return "cancelled"
            return "done"

        ptask = asyncio.ensure_future(parent())
        arm(ptask)
        return await ptask

    return main


def test_lambda_timer_cancels_parent() -> None:
    def arm(task: Any) -> None:
        asyncio.get_running_loop().call_later(0.05, lambda: task.cancel())

    assert finishes(_parent_awaits_child(arm)) == "cancelled"
    assert deadlocks() == []


def test_partial_timer_cancels_parent() -> None:
    def arm(task: Any) -> None:
        asyncio.get_running_loop().call_later(0.05, functools.partial(task.cancel, "stop"))

    assert finishes(_parent_awaits_child(arm)) == "cancelled"
    assert deadlocks() == []


def test_thread_cancels_parent() -> None:
    threads: list[threading.Thread] = []

    def arm(task: Any) -> None:
        loop = asyncio.get_running_loop()

        def later() -> None:
            time.sleep(0.05)
            loop.call_soon_threadsafe(task.cancel)

        threads.append(threading.Thread(target=later))
        threads[0].start()

    assert finishes(_parent_awaits_child(arm)) == "cancelled"
    threads[0].join(5)
    assert deadlocks() == []


def test_task_cancels_parent() -> None:
    # own shape: another task, sleeping first, cancels the parent
    def arm(task: Any) -> None:
        async def canceller() -> None:
            await asyncio.sleep(0.05)
            task.cancel()

        asyncio.ensure_future(canceller())

    assert finishes(_parent_awaits_child(arm)) == "cancelled"
    assert deadlocks() == []


def test_grandparent_timeout_cancels_the_chain() -> None:
    # own shape: the timer cancels a task that awaits the parent (it propagates)
    async def main() -> str:
        inner = _parent_awaits_child(lambda _t: None)
        try:
            return await asyncio.wait_for(asyncio.ensure_future(inner()), 0.05)
        except asyncio.TimeoutError:
            return "timed out"

    assert finishes(main) in ("timed out", "cancelled")
    assert deadlocks() == []


@pytest.mark.parametrize("kind", ["move_on_after", "fail_after"])
def test_anyio_scopes_cancel_parent(kind: str) -> None:
    anyio = pytest.importorskip("anyio")

    async def main() -> str:
        lock = aio.Lock()

        async def child() -> None:
            async with lock:
                pass

        try:
            with getattr(anyio, kind)(0.05):
                async with lock:
                    await asyncio.ensure_future(child())
        except TimeoutError:
            return "timed out"
        return "moved on"

    assert finishes(main) in ("timed out", "moved on")
    assert deadlocks() == []


# ------------------------------- 1. the loop thread and a thread-releasable lock


def test_loop_thread_retakes_lock_a_worker_releases() -> None:
    async def main() -> str:
        tl = lockwise.Lock(name="handoff")
        tl.acquire()

        def worker() -> None:
            time.sleep(0.05)
            tl.release()

        thread = threading.Thread(target=worker)
        thread.start()
        tl.acquire()  # blocks the loop's thread until the worker releases
        tl.release()
        thread.join(5)
        return "ok"

    assert finishes(main) == "ok"
    assert deadlocks() == []


def test_loop_thread_retakes_lock_taken_by_an_earlier_task() -> None:
    # own shape: the lock was taken by a task that has finished; a worker
    # blocked on a plain Event releases it once set
    async def main() -> str:
        tl = lockwise.Lock(name="handoff2")
        go = threading.Event()

        async def taker() -> None:
            tl.acquire()

        await asyncio.ensure_future(taker())

        def worker() -> None:
            go.wait(5)
            tl.release()

        thread = threading.Thread(target=worker)
        thread.start()
        threading.Timer(0.05, go.set).start()
        tl.acquire()
        tl.release()
        thread.join(5)
        return "ok"

    assert finishes(main) == "ok"
    assert deadlocks() == []


def test_loop_thread_self_wait_with_no_other_thread_still_raises() -> None:
    async def main() -> None:
        tl = lockwise.Lock(name="registry")
        holding = asyncio.Event()

        async def holder() -> None:
            with tl:
                holding.set()
                await asyncio.sleep(0.05)

        task = asyncio.ensure_future(holder())
        await holding.wait()
        with pytest.raises(lockwise.DeadlockError):
            tl.acquire()
        await task

    asyncio.run(main())


# --------------------------------------- 1. lock order under a timeout is timed


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout is 3.11+")
def test_inversion_under_asyncio_timeout_is_not_reported() -> None:
    async def main() -> None:
        a, b = aio.Lock(name="a"), aio.Lock(name="b")
        async with a, b:
            pass
        async with asyncio.timeout(5):  # type: ignore[attr-defined]
            async with b, a:
                pass

    finishes(main)
    assert lockwise.findings("lock-order") == []


def test_inversion_under_wait_for_timeout_is_not_reported() -> None:
    # own shape: the timed side runs first, under wait_for(..., timeout)
    async def main() -> None:
        a, b = aio.Lock(name="a2"), aio.Lock(name="b2")

        async def backward() -> None:
            async with b, a:
                pass

        await asyncio.wait_for(backward(), 5)
        async with a, b:
            pass

    finishes(main)
    assert lockwise.findings("lock-order") == []


def test_inversion_without_timeout_is_still_reported() -> None:
    async def main() -> None:
        a, b = aio.Lock(name="a3"), aio.Lock(name="b3")
        async with a, b:
            pass
        async with b, a:
            pass

    asyncio.run(main())  # no deadline on the loop: untimed acquisitions
    assert len(lockwise.findings("lock-order")) == 1


# ------------------------------------------- real deadlocks still raise


def test_parent_awaits_child_with_nothing_else_raises() -> None:
    async def main() -> str:
        lock = aio.Lock()

        async def child() -> None:
            async with lock:
                pass

        async with lock:
            with pytest.raises(lockwise.DeadlockError):
                await asyncio.ensure_future(child())
        return "raised"

    assert asyncio.run(main()) == "raised"
    assert len(deadlocks()) == 1


# ------------------------------ 2. every occurrence of a deadlock is raised


def _opposite_order() -> Callable[[], Awaitable[list[Any]]]:
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

    return main


def test_repeated_deadlock_with_reused_task_ids_raises_every_time() -> None:
    for round_ in range(15):
        results = asyncio.run(_opposite_order()())
        assert sum(isinstance(r, lockwise.DeadlockError) for r in results) == 1, round_
        gc.collect()  # free the tasks: the next round's may reuse their ids
    found = deadlocks()  # repeats of one signature: the first few kept, all counted
    assert len(found) == min(15, _findings.KEEP_PER_SIGNATURE)
    assert _findings.occurrences(found[0]) == 15


def test_task_retrying_after_deadlock_error_raises_again() -> None:
    async def main() -> int:
        lock = aio.Lock()

        async def child() -> int:
            errors = 0
            for _ in range(3):
                try:
                    async with lock:
                        return errors
                except lockwise.DeadlockError:
                    errors += 1
            return errors

        async with lock:
            return await asyncio.ensure_future(child())

    assert asyncio.run(main()) == 3
    assert len(deadlocks()) == 3


def test_loop_thread_self_wait_raises_every_time() -> None:
    # own shape: the loop rule's key was the lock's id and the thread's ident
    async def main() -> int:
        tl = lockwise.Lock(name="registry2")
        holding = asyncio.Event()
        release = asyncio.Event()

        async def holder() -> None:
            with tl:
                holding.set()
                await release.wait()

        task = asyncio.ensure_future(holder())
        await holding.wait()
        raised = 0
        for _ in range(3):
            try:
                tl.acquire()
            except lockwise.DeadlockError:
                raised += 1
        release.set()
        await task
        return raised

    assert asyncio.run(main()) == 3


# ------------------------------------------- 2. await cycles without locks


def test_two_tasks_awaiting_each_other() -> None:
    async def main() -> list[Any]:
        tasks: dict[str, Any] = {}

        async def a() -> None:
            await asyncio.sleep(0)
            await tasks["b"]

        async def b() -> None:
            await asyncio.sleep(0)
            await tasks["a"]

        tasks["a"] = asyncio.ensure_future(a())
        tasks["b"] = asyncio.ensure_future(b())
        return await asyncio.gather(tasks["a"], tasks["b"], return_exceptions=True)

    results = asyncio.run(main())
    assert all(isinstance(r, lockwise.DeadlockError) for r in results), results
    assert len(deadlocks()) == 1
    assert "wait for each other" in deadlocks()[0].summary


def test_await_ring_through_gather() -> None:
    # own shape: a awaits gather(b), b awaits c, c awaits a
    async def main() -> list[Any]:
        tasks: dict[str, Any] = {}

        async def a() -> None:
            await asyncio.sleep(0)
            await asyncio.gather(tasks["b"])

        async def b() -> None:
            await asyncio.sleep(0)
            await tasks["c"]

        async def c() -> None:
            await asyncio.sleep(0)
            await tasks["a"]

        for name, fn in (("a", a), ("b", b), ("c", c)):
            tasks[name] = asyncio.ensure_future(fn())
        return await asyncio.gather(*tasks.values(), return_exceptions=True)

    results = asyncio.run(main())
    assert any(isinstance(r, lockwise.DeadlockError) for r in results), results
    assert len(deadlocks()) == 1


def test_await_cycle_beside_a_live_lock_wait_is_raised() -> None:
    # own shape: a lock waiter that is not stuck (its owner waits on an Event
    # set later) must not hide an await cycle elsewhere on the loop
    async def main() -> list[Any]:
        tasks: dict[str, Any] = {}
        lock = aio.Lock()
        go = asyncio.Event()

        async def owner() -> None:
            async with lock:
                await go.wait()

        async def waiter() -> None:
            async with lock:
                pass

        async def a() -> None:
            await asyncio.sleep(0)
            await tasks["b"]

        async def b() -> None:
            await asyncio.sleep(0)
            await tasks["a"]

        side = [asyncio.ensure_future(owner()), asyncio.ensure_future(waiter())]
        await asyncio.sleep(0)
        tasks["a"] = asyncio.ensure_future(a())
        tasks["b"] = asyncio.ensure_future(b())
        results = await asyncio.gather(tasks["a"], tasks["b"], return_exceptions=True)
        go.set()
        await asyncio.gather(*side)
        return results

    results = asyncio.run(main())
    assert all(isinstance(r, lockwise.DeadlockError) for r in results), results


def test_await_cycle_is_raised_once_pending_timers_have_run() -> None:
    # own shape: while a timer is pending, the timer might cancel or release
    # anything; once it has run and the loop goes idle, the cycle is provable
    async def main() -> tuple[list[Any], float]:
        tasks: dict[str, Any] = {}
        loop = asyncio.get_running_loop()
        fired: list[float] = []

        async def a() -> None:
            await asyncio.sleep(0)
            await tasks["b"]

        async def b() -> None:
            await asyncio.sleep(0)
            await tasks["a"]

        tasks["a"] = asyncio.ensure_future(a())
        tasks["b"] = asyncio.ensure_future(b())
        loop.call_later(0.1, lambda: fired.append(loop.time()))
        start = loop.time()
        results = await asyncio.gather(tasks["a"], tasks["b"], return_exceptions=True)
        assert fired, "raised before the timer ran"
        return results, loop.time() - start

    results, elapsed = asyncio.run(main())
    assert all(isinstance(r, lockwise.DeadlockError) for r in results)
    assert elapsed >= 0.1


# ------------------------- 2. thread locks held across await, indirectly


class _Guard:
    def __init__(self, lock: Any) -> None:
        self.lock = lock

    async def __aenter__(self) -> None:
        self.lock.acquire()

    async def __aexit__(self, *_exc: object) -> None:
        self.lock.release()


def _held_across(kind: str) -> list[Any]:
    async def main() -> None:
        tl = lockwise.Lock(name=f"cache-{kind}")

        @contextlib.asynccontextmanager
        async def guarded() -> AsyncIterator[None]:
            with tl:
                yield

        cm: Any = guarded() if kind == "acm" else _Guard(tl)
        async with cm:
            await asyncio.sleep(0)

    asyncio.run(main())
    return [f for f in lockwise.findings("lock-order")
            if f.details.get("rule") == "held-across-await"]


def test_thread_lock_held_across_await_via_asynccontextmanager() -> None:
    found = _held_across("acm")
    assert len(found) == 1 and "cache-acm" in found[0].summary


def test_thread_lock_held_across_await_via_custom_aenter() -> None:
    found = _held_across("aenter")
    assert len(found) == 1 and "cache-aenter" in found[0].summary


def test_held_thread_lock_does_not_rescan_tasks_every_iteration() -> None:
    async def main() -> float:
        tl = lockwise.Lock(name="held-long")
        stop = asyncio.Event()
        idle = [asyncio.ensure_future(stop.wait()) for _ in range(3000)]
        await asyncio.sleep(0)

        @contextlib.asynccontextmanager
        async def guarded() -> AsyncIterator[None]:
            with tl:
                yield

        start = time.perf_counter()
        async with guarded():
            for _ in range(2000):
                await asyncio.sleep(0)
        elapsed = time.perf_counter() - start
        stop.set()
        await asyncio.gather(*idle)
        return elapsed

    elapsed = asyncio.run(main())
    assert elapsed < 2.0, elapsed  # plain asyncio: ~0.02 s; a scan per iteration: ~10 s


# ------------------- 2. a DeadlockError never leaves a lock in a wrong state


def test_deadlock_in_condition_wait_keeps_exclusion() -> None:
    async def main() -> list[str]:
        cond = aio.Condition()
        log: list[str] = []
        waiting = asyncio.Event()

        async def a() -> str:
            async with cond:
                waiting.set()
                await cond.wait()
                log.append("a in")
                await asyncio.sleep(0)
                log.append("a out")
            return "a"

        async def b(task_a: Any) -> str:
            await waiting.wait()
            try:
                async with cond:
                    log.append("b in")
                    cond.notify()
                    await task_a  # a needs the lock b holds: deadlock
                    log.append("b after a")
            except lockwise.DeadlockError:
                log.append("b raised")
            return "b"

        ta = asyncio.ensure_future(a())
        tb = asyncio.ensure_future(b(ta))
        results = await asyncio.gather(ta, tb, return_exceptions=True)
        assert not cond.locked()
        return [str(r) for r in results] + log

    out = asyncio.run(main())
    # b, the one whose raise releases what it holds, is the victim; a then
    # re-acquires and runs its critical section alone
    assert out == ["a", "b", "b in", "b raised", "a in", "a out"], out
    assert len(deadlocks()) == 1


def test_condition_reacquire_is_never_the_victim() -> None:
    # own shape: the notifier holds the lock and waits on a lock the waiter holds
    async def main() -> list[str]:
        cond = aio.Condition()
        other = aio.Lock(name="other")
        log: list[str] = []
        waiting = asyncio.Event()

        async def a() -> None:
            async with other:
                async with cond:
                    waiting.set()
                    await cond.wait()
                    log.append("a in")
                    assert cond.locked() and cond.owner is asyncio.current_task()
                log.append("a out")

        async def b() -> None:
            await waiting.wait()
            try:
                async with cond:
                    cond.notify()
                    async with other:  # a holds other and needs cond's lock
                        log.append("b both")
            except lockwise.DeadlockError:
                log.append("b raised")

        await asyncio.gather(a(), b(), return_exceptions=True)
        return log

    assert asyncio.run(main()) == ["b raised", "a in", "a out"]
    assert len(deadlocks()) == 1


# --------------------- 2. the watchdog reports tasks stuck on untimed awaits


def _hung(findings: list[Any]) -> set[str]:
    return {name for f in findings for name in f.threads}


def _hang_of(build: Callable[[], list[Any]], timeout: float = 0.2, tasks: int = 1) -> list[Any]:
    """Start the tasks ``build`` makes, wait (on a timer) for the watchdog to report
    a hang of ``tasks`` of them (tasks that began waiting in different polls may
    be reported in two findings), cancel them; the task hang findings."""

    async def main() -> None:
        tasks_made = build()
        end = time.monotonic() + 10
        while len(_hung(lockwise.findings("hang"))) < tasks and time.monotonic() < end:
            await asyncio.sleep(0.02)
        for task in tasks_made:
            task.cancel()
        await asyncio.gather(*tasks_made, return_exceptions=True)

    with lockwise.watchdog(timeout, interval=0.02):  # type: ignore[union-attr]
        asyncio.run(main())
    lockwise.watchdog(None)
    return [f for f in lockwise.findings("hang") if f.details.get("asyncio")]


def test_watchdog_reports_queue_cycle() -> None:
    def build() -> list[Any]:
        queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
        holder: dict[str, Any] = {}

        async def producer() -> None:
            for i in range(3):
                await queue.put(i)  # blocks on the second item: queue full

        async def consumer() -> None:
            await holder["producer"]  # waits for the producer before consuming
            while not queue.empty():
                queue.get_nowait()

        holder["producer"] = asyncio.ensure_future(producer())
        return [holder["producer"], asyncio.ensure_future(consumer())]

    [hang] = _hang_of(build)
    assert "Queue.put" in hang.summary and "Task-" in hang.summary
    assert len(hang.threads) == 2


def test_watchdog_reports_event_never_set() -> None:
    def build() -> list[Any]:
        event = asyncio.Event()
        return [asyncio.ensure_future(event.wait())]

    [hang] = _hang_of(build)
    assert "Event.wait" in hang.summary


@pytest.mark.skipif(sys.version_info < (3, 11), reason="TaskGroup is 3.11+")
def test_watchdog_reports_taskgroup_waiting_on_stuck_child() -> None:
    def build() -> list[Any]:
        event = asyncio.Event()

        async def group() -> None:
            async with asyncio.TaskGroup() as tg:  # type: ignore[attr-defined]
                tg.create_task(event.wait())

        return [asyncio.ensure_future(group())]

    hangs = _hang_of(build)
    assert hangs and "TaskGroup" in hangs[0].summary


def test_watchdog_reports_lock_cycle_kept_unprovable_by_a_heartbeat() -> None:
    # own shape: a real lock cycle, but a heartbeat timer could act: no
    # DeadlockError, and the watchdog reports the two tasks
    def build() -> list[Any]:
        a, b = aio.Lock(name="wa"), aio.Lock(name="wb")
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

        async def heartbeat() -> None:
            while True:
                await asyncio.sleep(0.01)

        return [asyncio.ensure_future(c()) for c in (one, two, heartbeat)]

    hangs = _hang_of(build, tasks=2)
    assert len(_hung(hangs)) == 2 and deadlocks() == []


def test_watchdog_ignores_sleeps_and_deadlines() -> None:
    async def main() -> None:
        event = asyncio.Event()
        tasks = [asyncio.ensure_future(asyncio.sleep(5)),
                 asyncio.ensure_future(asyncio.wait_for(event.wait(), 5))]
        await asyncio.sleep(0.4)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    with lockwise.watchdog(0.1, interval=0.02):  # type: ignore[union-attr]
        asyncio.run(main())
    lockwise.watchdog(None)
    assert lockwise.findings("hang") == []


# ------------------------------------------------- other loops and libraries


def _busy_program() -> Callable[[], Awaitable[int]]:
    async def main() -> int:
        lock, sem = aio.Lock(), aio.Semaphore(2)
        cond = aio.Condition()
        done = 0

        async def worker(i: int) -> None:
            nonlocal done
            async with sem, lock:
                await asyncio.sleep(0)
                done += 1
            async with cond:
                cond.notify_all()

        await asyncio.gather(*(worker(i) for i in range(20)))
        await lock.acquire()
        asyncio.get_running_loop().call_soon(lock.release)
        await lock.acquire()  # a hand-off through a callback
        lock.release()
        return done

    return main


def test_uvloop_program_runs() -> None:
    uvloop = pytest.importorskip("uvloop")
    loop = uvloop.new_event_loop()
    try:
        assert loop.run_until_complete(asyncio.wait_for(_busy_program()(), 10)) == 20
    finally:
        loop.close()
    assert kinds() == []


def test_uvloop_task_deadlock_is_reported_as_a_hang() -> None:
    # uvloop's callbacks and timers are unreadable, so a cycle of tasks there
    # is never provable (a callback may cancel one): not raised, but the
    # watchdog reports it. It used to see no task of a loop lockwise does not
    # patch: the freeze was silent.
    uvloop = pytest.importorskip("uvloop")
    from lockwise import _watchdog

    async def main() -> None:
        a, b = aio.Lock(name="uv_a"), aio.Lock(name="uv_b")
        ready = asyncio.Event()

        async def first() -> None:
            async with a:
                await ready.wait()
                async with b:
                    pass

        async def second() -> None:
            async with b:
                ready.set()
                await asyncio.sleep(0.01)
                async with a:
                    pass

        tasks = [asyncio.ensure_future(first()), asyncio.ensure_future(second())]
        tasks[0].set_name("uv_first")
        tasks[1].set_name("uv_second")
        with _watchdog.Watchdog(0.2, interval=0.05):
            deadline = time.monotonic() + 10
            while "hang" not in kinds() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(asyncio.wait_for(main(), 20))
    finally:
        loop.close()
    assert deadlocks() == []
    hang = next(f for f in lockwise.findings() if f.kind == "hang")
    assert {"uv_first", "uv_second"} <= set(hang.threads), hang.threads


def test_anyio_program_runs() -> None:
    anyio = pytest.importorskip("anyio")

    async def main() -> int:
        async with anyio.create_task_group() as tg:
            tg.start_soon(asyncio.sleep, 0)
        with anyio.fail_after(10):
            return await _busy_program()()

    assert anyio.run(main) == 20
    assert kinds() == []


def test_watchdog_ignores_a_lock_wait_while_the_owner_runs() -> None:
    # own shape: the owner holds the lock across timed sleeps (it is making
    # progress): the waiter is contended, not hung, as for threads
    async def main() -> None:
        lock = aio.Lock(name="slow")
        held = asyncio.Event()

        async def owner() -> None:
            async with lock:
                held.set()
                for _ in range(20):
                    await asyncio.sleep(0.02)

        async def waiter() -> None:
            async with lock:
                pass

        tasks = [asyncio.ensure_future(owner())]
        await held.wait()
        tasks.append(asyncio.ensure_future(waiter()))
        await asyncio.gather(*tasks)

    with lockwise.watchdog(0.1, interval=0.02):  # type: ignore[union-attr]
        asyncio.run(main())
    lockwise.watchdog(None)
    assert lockwise.findings("hang") == []


def test_watchdog_needs_two_polls_to_call_a_lock_wait_hung() -> None:
    # The watchdog reads tasks from its own thread while the loop runs. Inside
    # aio.Lock.release the owner is cleared before the first waiter is woken:
    # a poll landing there saw "no owner runs" and reported a hang of a wait
    # about to be granted (seen once in 10 runs on 3.13t). One poll's verdict
    # is now a suspicion; the next poll must agree.
    from lockwise import _aio_wait

    async def main() -> list[list[Any]]:
        lock = aio.Lock(name="handed-over")
        held = asyncio.Event()
        release: list[bool] = []

        async def owner() -> None:  # runs: sleeps on timers until told
            async with lock:
                held.set()
                while not release:
                    await asyncio.sleep(0.005)

        async def waiter() -> None:
            async with lock:
                pass

        tasks = [asyncio.ensure_future(owner())]
        await held.wait()
        tasks.append(asyncio.ensure_future(waiter()))
        for _ in range(3):
            await asyncio.sleep(0)
        t0 = time.monotonic()
        polls = [_aio_wait.hung_tasks(0.1, set(), now=t0)]  # notes the wait
        saved = lock._owner
        lock._owner = None  # the window inside release()
        polls.append(_aio_wait.hung_tasks(0.1, set(), now=t0 + 1))
        lock._owner = saved  # release() goes on: the owner is back in view
        polls.append(_aio_wait.hung_tasks(0.1, set(), now=t0 + 1.02))
        # The same wait with no owner on two polls in a row is a hang.
        lock._owner = None
        polls.append(_aio_wait.hung_tasks(0.1, set(), now=t0 + 1.04))
        polls.append(_aio_wait.hung_tasks(0.1, set(), now=t0 + 1.06))
        lock._owner = saved
        release.append(True)
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        return [[label for _t, label, _s, _k in poll] for poll in polls]

    polls = finishes(main)
    assert polls[:4] == [[], [], [], []], polls
    assert len(polls[4]) == 1 and "Lock.acquire" in polls[4][0], polls
