"""Free-threaded Python: the accelerator keeps the GIL off, and stress tests
that only mean something when threads really run at the same time.

The stress tests run on every build (with the GIL they are cheap and still
check the results), each for ``LOCKWISE_STRESS_SECONDS`` (default 1.5 s) of
work, with every join timed. Without the GIL (``PYTHON_GIL=0`` on a ``t``
build) they are the tests of docs/free-threading.md: exact counters, no
overlap inside a critical section, exactly one winner of racing releases, no
lost wake-up, no false finding, no crash while other threads read the locks.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import threading
import time
from typing import Any, Callable

import pytest

import lockwise
from lockwise import _primitives

from .conftest import Runner

FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
SECONDS = float(os.environ.get("LOCKWISE_STRESS_SECONDS", "1.5"))
THREADS = 16

pytestmark = pytest.mark.timeout(120)


def gil_enabled() -> bool:
    check = getattr(sys, "_is_gil_enabled", None)
    return True if check is None else bool(check())


# ------------------------------------------------------------ the GIL stays off


@pytest.mark.skipif(not FREE_THREADED, reason="needs a free-threaded (t) build")
def test_import_leaves_the_gil_disabled_with_the_accelerator() -> None:
    pytest.importorskip("lockwise._speedups")
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHON_GIL", "LOCKWISE_PURE", "PYTHONWARNINGS")}
    code = ("import sys, lockwise, lockwise._primitives as p; "
            "print(sys._is_gil_enabled(), p.IMPLEMENTATION)")
    out = subprocess.run([sys.executable, "-X", "warn_default_encoding=0", "-c", code],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "c"], (out.stdout, out.stderr)
    assert "global interpreter lock" not in out.stderr, out.stderr


@pytest.mark.skipif(not FREE_THREADED, reason="needs a free-threaded (t) build")
def test_this_run_says_which_mode_it_tests() -> None:
    # The suite tests "no GIL" only if nothing it imports turned the GIL back
    # on (the accelerator declares itself; pure mode loads no C of lockwise's).
    if os.environ.get("PYTHON_GIL") == "1":
        pytest.skip("PYTHON_GIL=1 forces the GIL on")
    assert not gil_enabled(), _primitives.IMPLEMENTATION


# ----------------------------------------------------------------- helpers


def run_for(seconds: float, n: int, body: Callable[[int], None]) -> Runner:
    """Start ``n`` threads that call ``body(i)`` in a loop until ``seconds``
    have passed (they start together); join them (timed)."""
    barrier = threading.Barrier(n)
    deadline: list[float] = []

    def loop(i: int) -> None:
        if barrier.wait(30) == 0:
            deadline.append(time.monotonic() + seconds)
        while not deadline:
            time.sleep(0.0005)
        end = deadline[0]
        while time.monotonic() < end:
            body(i)

    runner = Runner()
    for i in range(n):
        runner.start(lambda i=i: loop(i), f"S{i}")  # type: ignore[misc]
    runner.join(seconds + 60)
    assert not runner.errors, runner.errors
    return runner


# ------------------------------------------------------------ mutual exclusion


@pytest.mark.parametrize("kind", ["Lock", "RLock", "Semaphore(1)"])
def test_one_lock_many_threads_exact_counter(kind: str) -> None:
    lock: Any = {"Lock": lockwise.Lock, "RLock": lockwise.RLock,
                 "Semaphore(1)": lambda: lockwise.Semaphore(1)}[kind]()
    counter = [0]
    inside = [0]
    overlaps = [0]
    mine = [0] * THREADS

    def body(i: int) -> None:
        for _ in range(50):
            if i % 2:
                lock.acquire()
            else:
                lock.__enter__()
            inside[0] += 1
            if inside[0] != 1:
                overlaps[0] += 1
            counter[0] += 1
            inside[0] -= 1
            if i % 2:
                lock.release()
            else:
                lock.__exit__(None, None, None)
            mine[i] += 1

    run_for(SECONDS, THREADS, body)
    assert overlaps[0] == 0
    assert counter[0] == sum(mine) > 0
    assert lockwise.findings() == []
    assert lock.acquire(blocking=False)  # free again, and exactly once
    if kind == "Lock":
        assert not lock.acquire(blocking=False)
    lock.release()


def test_separate_locks_exact_counters_and_nested_order() -> None:
    # Each thread its own pair of locks, always nested in one order, plus a
    # shared lock taken inside: no finding (same order everywhere), exact counts.
    shared = lockwise.Lock()
    pairs = [(lockwise.Lock(), lockwise.RLock()) for _ in range(THREADS)]
    counts = [0] * THREADS
    total = [0]

    def body(i: int) -> None:
        outer, inner = pairs[i]
        for _ in range(20):
            with outer, inner, inner:
                counts[i] += 1
                with shared:
                    total[0] += 1

    run_for(SECONDS, THREADS, body)
    assert total[0] == sum(counts) > 0
    assert lockwise.findings() == []
    assert all(not a.locked() and not b._is_owned() for a, b in pairs)
    assert lockwise.held_locks() == []


def test_racing_releases_have_exactly_one_winner() -> None:
    # A Lock may be released by any thread; when several release it at once
    # (a program bug threading answers with RuntimeError), exactly one
    # release must win: a second one would free the lock for two holders.
    lock = lockwise.Lock()
    racers = 4
    barrier = threading.Barrier(racers + 1)
    wins: list[int] = []
    losses: list[int] = []
    rounds = [0]
    stop = threading.Event()

    def racer() -> None:
        while True:
            try:
                barrier.wait(30)
            except threading.BrokenBarrierError:
                return
            if stop.is_set():
                return
            try:
                lock.release()
                wins.append(1)
            except RuntimeError:
                losses.append(1)
            barrier.wait(30)

    runner = Runner()
    for i in range(racers):
        runner.start(racer, f"R{i}")
    deadline = time.monotonic() + SECONDS
    while time.monotonic() < deadline:
        assert lock.acquire(timeout=10)
        barrier.wait(30)  # the racers release it all at once
        barrier.wait(30)  # ... and are done
        rounds[0] += 1
        assert len(wins) == rounds[0], (len(wins), rounds[0])
        # Released once: free, and one try takes it, the next one does not.
        assert lock.acquire(blocking=False)
        assert not lock.acquire(blocking=False)
        lock.release()
    stop.set()
    barrier.wait(30)
    runner.join(30)
    assert not runner.errors, runner.errors
    assert len(losses) == rounds[0] * (racers - 1)


def test_semaphore_bound_holds() -> None:
    sem = lockwise.BoundedSemaphore(3)
    inside = [0]
    peak = [0]
    guard = threading.Lock()  # plain: counts the holders exactly

    def body(i: int) -> None:
        with sem:
            with guard:
                inside[0] += 1
                peak[0] = max(peak[0], inside[0])
            with guard:
                inside[0] -= 1

    run_for(SECONDS, 8, body)
    assert 1 <= peak[0] <= 3
    assert inside[0] == 0


# ------------------------------------------------------------- wake-ups


def test_condition_ping_pong_no_lost_wakeup() -> None:
    # Threads pass a token round a ring with untimed waits: a lost wake-up
    # freezes the ring (the join times out, or lockwise raises DeadlockError
    # in the waiters: both fail the test).
    n = 6
    cond = lockwise.Condition()
    turn = [0]
    passes = [0]
    stop = [False]
    deadline = time.monotonic() + SECONDS

    def player(i: int) -> None:
        while True:
            with cond:
                while turn[0] != i and not stop[0]:
                    cond.wait()
                if stop[0]:
                    return
                passes[0] += 1
                if time.monotonic() > deadline:
                    stop[0] = True
                turn[0] = (i + 1) % n
                cond.notify_all()

    runner = Runner()
    for i in range(n):
        runner.start(lambda i=i: player(i), f"P{i}")  # type: ignore[misc]
    runner.join(SECONDS + 60)
    assert not runner.errors, runner.errors
    assert passes[0] > n
    assert lockwise.findings() == []


def test_lock_handoff_signal_no_lost_wakeup() -> None:
    # A Lock used as a one-shot signal (released by another thread), many
    # times over: every waiter wakes, nothing is reported.
    n = 4
    rounds = [0]
    deadline = time.monotonic() + SECONDS
    while time.monotonic() < deadline:
        gates = [lockwise.Lock() for _ in range(n)]
        for g in gates:
            g.acquire()
        woke: list[int] = []

        def waiter(g: Any, i: int, woke: list[int] = woke) -> None:
            g.acquire()  # untimed: the opener releases it
            woke.append(i)
            g.release()

        def opener(gates: list[Any] = gates) -> None:
            for g in gates:
                g.release()

        runner = Runner()
        for i, g in enumerate(gates):
            runner.start(lambda g=g, i=i: waiter(g, i), f"W{i}")  # type: ignore[misc]
        runner.start(opener, "opener")
        runner.join(30)
        assert not runner.errors, runner.errors
        assert sorted(woke) == list(range(n))
        rounds[0] += 1
    assert rounds[0] > 0
    assert not [f for f in lockwise.findings() if f.kind == "deadlock"]


# ------------------------------------------------- readers while others write


def test_introspection_while_others_acquire() -> None:
    # Other threads read owner, acquired_at, repr and held_locks while the
    # locks change hands: no crash, no error, only sane values.
    locks: list[Any] = [lockwise.Lock(), lockwise.RLock()]
    names = {f"S{i}" for i in range(THREADS)}

    def body(i: int) -> None:
        lock = locks[i % 2]
        if i % 4 < 2:
            for _ in range(20):
                with lock:
                    pass
        else:
            for _ in range(5):
                owner = lock.owner
                assert owner is None or owner.name in names
                at = lock.acquired_at
                assert at is None or ":" in at
                assert "lockwise." in repr(lock)
                lockwise.held_locks()
                lock.locked()

    run_for(SECONDS, THREADS, body)
    assert lockwise.findings() == []


def test_threads_starting_and_ending_while_locking() -> None:
    # Thread states are made and dropped while others lock: every short-lived
    # thread takes the shared lock, exact count.
    lock = lockwise.Lock()
    count = [0]
    made = [0] * 8

    def short() -> None:
        with lock:
            count[0] += 1

    def body(i: int) -> None:
        t = threading.Thread(target=short)
        t.start()
        t.join(30)
        assert not t.is_alive()
        made[i] += 1

    run_for(SECONDS, 8, body)
    assert count[0] == sum(made) > 0
