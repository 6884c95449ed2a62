"""multiprocessing's Semaphore and BoundedSemaphore under lockwise
(``_mp._Permits``): who holds the permits, across real processes under each
start method; waits that lockwise sees; a report, never a raise, when every
permit is held by processes that exited. Every wait is bounded."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
from multiprocessing import synchronize
from typing import Any

import pytest

import lockwise
from lockwise import _mp

from .mp_helpers import finish as _finish

pytestmark = [pytest.mark.skipif(sys.platform != "linux", reason="fork, forkserver and /proc"),
              # spawn and forkserver start interpreters: seconds each under load
              pytest.mark.timeout(150)]

METHODS = ["fork", "spawn", "forkserver"]
needs_c = pytest.mark.skipif(not _mp.SEMAPHORES,
                             reason="permit tables need the C accelerator (compare-and-swap)")


def _dead_holder_findings() -> list[Any]:
    return [f for f in lockwise.findings("deadlock") if f.details.get("rule") == "dead holder"]


# ---------------------------------------------------------------- children (module level: spawn)

def _take_and_exit(sem: Any, taken: Any) -> None:
    """Take a permit and exit holding it."""
    sem.acquire()
    taken.set()


def _take_and_hold(sem: Any, taken: Any, finish: Any) -> None:
    """Take a permit, say so, and give it back when told (or after 60 s)."""
    with sem:
        taken.set()
        finish.wait(60)


def _consume(sem: Any, n: int) -> None:
    """Take ``n`` signals (permits given by another process) and exit."""
    for _ in range(n):
        if not sem.acquire(timeout=30):
            os._exit(5)


# ---------------------------------------------------------------- what is tracked

@needs_c
def test_the_programs_semaphores_are_tracked_and_multiprocessings_own_are_not(
        mp_shared: str) -> None:
    ctx = multiprocessing.get_context("fork")
    sem = ctx.Semaphore(2)
    bounded = multiprocessing.BoundedSemaphore(1)
    assert type(sem) is _mp.MPSemaphore and type(bounded) is _mp.MPBoundedSemaphore
    direct = synchronize.Semaphore(1, ctx=ctx)
    assert type(direct) is _mp.MPSemaphore
    # Still multiprocessing's classes for isinstance, and the names unchanged.
    assert isinstance(sem, synchronize.Semaphore)
    assert isinstance(bounded, synchronize.BoundedSemaphore)
    assert synchronize.Semaphore.__module__ == "multiprocessing.synchronize"
    assert sem._site.label == "sem" and bounded._site.label == "bounded"
    # multiprocessing signals with its own: untracked, and picklable by name.
    queue, cond = ctx.Queue(), ctx.Condition()
    assert type(queue._sem) is synchronize.BoundedSemaphore
    assert type(cond._sleeping_count) is synchronize.Semaphore
    assert type(cond._wait_semaphore) is synchronize.Semaphore
    queue.close()
    lockwise.uninstall()
    try:
        assert type(ctx.Semaphore(1)) is synchronize.Semaphore
        assert type(ctx.BoundedSemaphore(1)) is synchronize.BoundedSemaphore
    finally:
        lockwise.install()


@pytest.mark.skipif(_mp.SEMAPHORES, reason="the accelerator tracks semaphores")
def test_without_the_accelerator_semaphores_stay_multiprocessings(mp_shared: str) -> None:
    sem = multiprocessing.get_context("fork").Semaphore(1)
    assert type(sem) is synchronize.Semaphore


@needs_c
def test_holders_follow_acquire_and_release(mp_shared: str) -> None:
    ctx = multiprocessing.get_context("fork")
    pool = ctx.BoundedSemaphore(3)
    me = {"pid": os.getpid(), "thread": threading.get_ident()}
    assert pool.holders() == []
    assert pool.acquire() is True
    assert pool.holders() == [me]
    with pool:
        assert pool.holders() == [me, me]
        assert f"held by pid {os.getpid()} thread {threading.get_ident()}" in repr(pool)
    assert pool.holders() == [me]
    assert pool.acquire(False) is True and pool.acquire(True, 0.01) is True
    assert pool.acquire(False) is False and pool.acquire(True, 0.01) is False
    assert pool.acquire(timeout=-1) is False  # multiprocessing: a negative timeout is 0
    assert len(pool.holders()) == 3 and pool.get_value() == 0
    for _ in range(3):
        pool.release()
    assert pool.holders() == [] and pool.get_value() == 3
    # Over-release: multiprocessing's error, and the table is unchanged.
    with pytest.raises(ValueError, match="released too many times"):
        pool.release()
    assert pool.holders() == [] and pool.unrecorded() == 0


@needs_c
def test_a_release_by_a_thread_that_holds_none_clears_the_oldest(mp_shared: str) -> None:
    sem = multiprocessing.get_context("fork").Semaphore(2)
    idents: list[int] = []
    taken, finish = threading.Event(), threading.Event()

    def taker() -> None:
        idents.append(threading.get_ident())
        sem.acquire()  # bare: given back by the main thread (a hand-off)
        taken.set()
        finish.wait(10)

    first = threading.Thread(target=taker)
    first.start()
    try:
        assert taken.wait(10)
        sem.acquire()  # the main thread's, newer
        assert [h["thread"] for h in sem.holders()] == [idents[0], threading.get_ident()]
        sem.release()  # the main thread gives its own back
        assert [h["thread"] for h in sem.holders()] == [idents[0]]
        sem.release()  # holds none now: the hand-off ends the taker's
        assert sem.holders() == [] and sem.get_value() == 2
    finally:
        finish.set()
        first.join(10)


@needs_c
def test_a_full_table_counts_the_rest_and_empties_with_the_releases(mp_shared: str) -> None:
    sem = multiprocessing.get_context("fork").Semaphore(_mp.PERMITS + 4)
    for _ in range(_mp.PERMITS + 4):
        assert sem.acquire(False)
    assert len(sem.holders()) == _mp.PERMITS and sem.unrecorded() == 4
    for _ in range(_mp.PERMITS + 4):
        sem.release()
    assert sem.holders() == [] and sem.unrecorded() == 0


@needs_c
def test_many_threads_never_share_an_entry(mp_shared: str) -> None:
    # Claims race for entries; each thread must find exactly its own.
    sem = multiprocessing.get_context("fork").Semaphore(_mp.PERMITS)
    start, errors = threading.Barrier(8), []

    def churn() -> None:
        me = threading.get_ident()
        try:
            start.wait(10)
            for _ in range(300):
                with sem:
                    mine = [h for h in sem.holders() if h["thread"] == me]
                    if len(mine) != 1:
                        errors.append(mine)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=churn) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert sem.holders() == [] and sem.unrecorded() == 0 and sem.get_value() == _mp.PERMITS


# ---------------------------------------------------------------- across processes

@needs_c
@pytest.mark.parametrize("method", METHODS)
def test_a_permit_taken_in_a_child_is_seen_by_the_parent(mp_shared: str, method: str) -> None:
    ctx = multiprocessing.get_context(method)
    sem = ctx.Semaphore(1)
    taken, finish = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_take_and_hold, args=(sem, taken, finish))
    child.start()
    try:
        assert taken.wait(45), "the child never took the permit"
        [holder] = sem.holders()
        assert holder["pid"] == child.pid
        assert f"held by pid {child.pid}" in repr(sem)
        assert sem.acquire(timeout=0.05) is False
    finally:
        finish.set()
        assert _finish(child) == [0]
    assert sem.holders() == []
    assert sem.acquire(timeout=5) is True
    sem.release()


@needs_c
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_permits_held_by_exited_processes_are_reported_never_raised(
        mp_shared: str, method: str) -> None:
    ctx = multiprocessing.get_context(method)
    pool = ctx.BoundedSemaphore(2)
    children = []
    for _ in range(2):
        taken = ctx.Event()
        child = ctx.Process(target=_take_and_exit, args=(pool, taken))
        child.start()
        children.append(child)
        assert taken.wait(45)
    assert _finish(*children) == [0, 0]
    before = pool.holders()
    assert [h["pid"] for h in before] == [c.pid for c in children]  # oldest first
    outcome: list[Any] = []

    def waiter() -> None:
        try:
            outcome.append(pool.acquire())  # untimed: ends only by the release below
        except BaseException as exc:  # a DeadlockError would be the bug
            outcome.append(exc)

    thread = threading.Thread(target=waiter, name="Waiter")
    thread.start()
    deadline = time.monotonic() + 30
    while not _dead_holder_findings() and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        [finding] = _dead_holder_findings()
        assert finding.details["raised"] is False
        assert sorted(finding.details["dead_pids"]) == sorted(c.pid for c in children)
        assert "any process" in finding.details["why_not_raised"]
        assert "Waiter" in finding.summary and "pool" in finding.summary
        assert "2 permits are held by processes that exited" in finding.summary
        assert thread.is_alive() and outcome == []  # reported, and still waiting
    finally:
        pool.release()  # a hand-off: the waiter takes it
        thread.join(10)
    assert outcome == [True]
    # The main thread held none: its release cleared the oldest entry (the
    # first child's), and the waiter's permit is entered after the second's.
    assert pool.holders() == [before[1], {"pid": os.getpid(), "thread": thread.ident}]


@needs_c
def test_no_report_while_a_holder_process_lives(mp_shared: str) -> None:
    ctx = multiprocessing.get_context("fork")
    sem = ctx.Semaphore(1)
    taken, finish = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_take_and_hold, args=(sem, taken, finish))
    child.start()
    got: list[bool] = []
    try:
        assert taken.wait(45)
        waiter = threading.Thread(target=lambda: got.append(sem.acquire()))
        waiter.start()
        time.sleep(3 * _mp.RECHECK + 1.5)  # several looks at the table
        assert got == [] and waiter.is_alive()
    finally:
        finish.set()
        assert _finish(child) == [0]
    waiter.join(10)
    assert got == [True]
    sem.release()
    assert _dead_holder_findings() == []


@needs_c
def test_a_semaphore_used_as_a_signal_never_reports(mp_shared: str) -> None:
    # Semaphore(0): the parent gives permits, a child takes them and exits:
    # its entries stay, but a signal's takers block nobody.
    ctx = multiprocessing.get_context("fork")
    items = ctx.Semaphore(0)
    for _ in range(3):
        items.release()
    child = ctx.Process(target=_consume, args=(items, 3))
    child.start()
    assert _finish(child) == [0]
    assert len(items.holders()) == 3
    got: list[bool] = []
    waiter = threading.Thread(target=lambda: got.append(items.acquire()))
    waiter.start()
    time.sleep(2 * _mp.RECHECK + 1)
    items.release()
    waiter.join(10)
    assert got == [True]
    assert _dead_holder_findings() == []


# ---------------------------------------------------------------- what lockwise sees

@needs_c
def test_a_blocked_wait_is_registered_and_withdrawn(mp_shared: str) -> None:
    sem = multiprocessing.get_context("fork").Semaphore(0)
    got: list[bool] = []
    waiter = threading.Thread(target=lambda: got.append(sem.acquire()), name="SemWaiter")
    waiter.start()
    try:
        deadline = time.monotonic() + 10
        seen = None
        while time.monotonic() < deadline:
            snap = lockwise.snapshot()
            seen = next((t for t in snap.threads if t.name == "SemWaiter" and t.waiting_for),
                        None)
            if seen is not None:
                break
            time.sleep(0.02)
        assert seen is not None and seen.waiting_for == "sem"
    finally:
        sem.release()
        waiter.join(10)
    assert got == [True]
    snap = lockwise.snapshot()
    assert not [t for t in snap.threads if t.name == "SemWaiter" and t.waiting_for]


@needs_c
def test_an_exception_during_the_wait_takes_no_permit(mp_shared: str) -> None:
    # A signal handler raises in the middle of an untimed wait: the acquire
    # fails as multiprocessing's does, nothing is taken or recorded.
    sem = multiprocessing.get_context("fork").Semaphore(0)

    class Stop(Exception):
        pass

    def handler(signum: int, frame: Any) -> None:
        raise Stop

    old = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with pytest.raises(Stop):
            sem.acquire()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert sem.get_value() == 0 and sem.holders() == []
    snap = lockwise.snapshot()
    assert not [t for t in snap.threads if t.ident == threading.get_ident() and t.waiting_for]


@needs_c
def test_pickling_outside_spawning_is_refused_as_multiprocessing_refuses_it(
        mp_shared: str) -> None:
    sem = multiprocessing.get_context("spawn").Semaphore(1)
    with pytest.raises(RuntimeError, match="inheritance"):
        pickle.dumps(sem)
