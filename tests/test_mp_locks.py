"""multiprocessing's Lock and RLock under lockwise (``_mp``): real processes,
under each start method, every wait bounded."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import sys
import threading
import time
from typing import Any

import pytest

import lockwise
from lockwise import _mp

from .mp_helpers import finish as _finish

pytestmark = [pytest.mark.skipif(sys.platform != "linux", reason="fork, forkserver and /proc"),
              # spawn and forkserver start interpreters: seconds each under load
              pytest.mark.timeout(150)]

METHODS = ["fork", "spawn", "forkserver"]


def _ready(*events: Any, timeout: float = 45) -> None:
    """Wait for the children's events (spawn starts a new interpreter: seconds
    under load)."""
    deadline = time.monotonic() + timeout
    for i, event in enumerate(events):
        assert event.wait(max(0.1, deadline - time.monotonic())), f"child {i + 1} never got ready"


# ---------------------------------------------------------------- children (module level: spawn)

def _pair_child(first: Any, second: Any, mine: Any, other: Any,
                how: str = "with with") -> None:
    """Take ``first``, say so (``mine``), wait for the other child to take its
    own (``other``), then take ``second``. ``how`` says how each is taken:
    ``with`` (released by its holder) or ``bare`` (``acquire()``, which
    another process may release). Exit 3 on DeadlockError, 4 if the other
    child never got ready, else 0."""
    take_first, take_second = how.split()
    with contextlib.ExitStack() as stack:
        if take_first == "with":
            stack.enter_context(first)  # __enter__, as a with block
        else:
            first.acquire()  # kept to the end of the process
        mine.set()
        if not other.wait(45):
            sys.exit(4)
        try:
            if take_second == "with":
                stack.enter_context(second)
            else:
                second.acquire()
                second.release()
        except lockwise.DeadlockError:
            sys.exit(3)
    sys.exit(0)


def _start_pair(ctx: Any, first: Any, second: Any, how1: str = "with with",
                how2: str = "with with") -> tuple[Any, Any, Any, Any]:
    """Two children: P1 takes ``first`` then ``second``, P2 the reverse."""
    ready1, ready2 = ctx.Event(), ctx.Event()
    p1 = ctx.Process(target=_pair_child, args=(first, second, ready1, ready2, how1),
                     name="P1", daemon=True)
    p2 = ctx.Process(target=_pair_child, args=(second, first, ready2, ready1, how2),
                     name="P2", daemon=True)
    p1.start()
    p2.start()
    return p1, p2, ready1, ready2


def _die_holding(lock: Any, in_with: bool) -> None:
    if in_with:
        with lock:
            os._exit(0)
    lock.acquire()
    os._exit(0)


def _take_and_report(lock: Any, done: Any) -> None:
    try:
        with lock:
            done.set()
    except lockwise.DeadlockError:
        sys.exit(3)
    sys.exit(0)


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_abba_between_two_processes_raises_in_one_and_both_finish(
        mp_shared: str, method: str, kind: str) -> None:
    ctx = multiprocessing.get_context(method)
    a, b = getattr(ctx, kind)(), getattr(ctx, kind)()
    assert isinstance(a, _mp.MPLock if kind == "Lock" else _mp.MPRLock)
    # the events stay referenced until the children finish: a spawned child
    # opens their semaphores by name, which their finalizer unlinks
    p1, p2, ready1, ready2 = _start_pair(ctx, a, b)
    codes = _finish(p1, p2)
    del ready1, ready2
    assert sorted(codes) == [0, 3], codes


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_cycle_through_a_bare_acquire_is_not_raised_and_a_hand_off_ends_it(
        mp_shared: str, method: str) -> None:
    """P1 took ``a`` by acquire() and waits for ``b``; P2 holds ``b`` and
    waits for ``a``. This process may still release ``a`` (any process may
    release a multiprocessing.Lock), and does: both finish, neither raises."""
    ctx = multiprocessing.get_context(method)
    a, b = ctx.Lock(), ctx.Lock()
    p1, p2, ready1, ready2 = _start_pair(ctx, a, b, "bare with", "with bare")
    try:
        _ready(ready1, ready2)
        time.sleep(1.5)  # both blocked, registered and checked several times
        assert p1.is_alive() and p2.is_alive(), (p1.exitcode, p2.exitcode)
        a.release()  # the hand-off
    finally:
        codes = _finish(p1, p2)
    assert codes == [0, 0]


def test_an_interrupted_wait_leaves_nothing_in_the_store(mp_shared: str) -> None:
    """A signal handler's exception ends a registered wait: its wait row and
    the holders it published go with it (else a stale row could close a
    false cycle for another process)."""
    import signal

    from lockwise._shared_store import store_for

    ctx = multiprocessing.get_context("fork")
    lock, mine = ctx.Lock(), ctx.Lock()
    gate = ctx.Event()
    p = ctx.Process(target=_hold_until, args=(lock, gate), daemon=True)
    p.start()

    class Interrupted(Exception):
        pass

    def handler(signum: int, frame: Any) -> None:
        raise Interrupted

    store = store_for(None)
    seen: list[Any] = []
    stop = threading.Event()

    def watch() -> None:  # what other processes see while the main thread waits
        while not stop.wait(0.02):
            seen.extend(r for r in store.waits() + store.holders() if r["pid"] == os.getpid())

    old = signal.signal(signal.SIGALRM, handler)
    watcher = threading.Thread(target=watch)
    try:
        assert gate.wait(20)
        watcher.start()
        with mine:
            signal.setitimer(signal.ITIMER_REAL, 0.6)
            with pytest.raises(Interrupted):
                lock.acquire()
        stop.set()
        watcher.join(10)
        assert {r.get("lock", r.get("target")) for r in seen} == {lock._key, mine._key}
        assert [r for r in store.waits() + store.holders() if r["pid"] == os.getpid()] == []
    finally:
        stop.set()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        p.kill()
        _finish(p)
        if watcher.ident is not None:
            watcher.join(10)


def _hold_until(lock: Any, gate: Any) -> None:
    with lock:
        gate.set()
        time.sleep(30)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_holder_that_died_in_a_with_block_is_a_deadlock_naming_its_pid(
        mp_shared: str, method: str) -> None:
    ctx = multiprocessing.get_context(method)
    lock = ctx.Lock()
    p = ctx.Process(target=_die_holding, args=(lock, True), daemon=True)
    p.start()
    try:
        deadline = time.monotonic() + 20
        while p.is_alive() or lock.holder() is None:  # is_alive() reaps: not a zombie after
            assert time.monotonic() < deadline, "the child never held the lock"
            time.sleep(0.01)
        assert lock.holder() == {"pid": p.pid, "thread": lock.holder()["thread"]}
        with pytest.raises(lockwise.DeadlockError) as info, lock:
            pass
        assert f"process {p.pid}" in str(info.value)
        assert info.value.finding.details["dead_pid"] == p.pid
    finally:
        _finish(p)


def test_a_zombie_holder_is_dead(mp_shared: str) -> None:
    ctx = multiprocessing.get_context("fork")
    lock = ctx.RLock()
    p = ctx.Process(target=_die_holding, args=(lock, False), daemon=True)
    p.start()
    try:
        deadline = time.monotonic() + 20
        while lock.holder() is None:
            assert time.monotonic() < deadline, "the child never held the lock"
            time.sleep(0.01)
        time.sleep(0.2)  # the child exits; not reaped (no join, no is_alive): a zombie
        with pytest.raises(lockwise.DeadlockError, match=f"process {p.pid}"):
            lock.acquire()
    finally:
        _finish(p)


def test_a_dead_holder_after_a_bare_acquire_is_reported_not_raised(mp_shared: str) -> None:
    """Another process may still release a Lock taken by acquire(): the wait
    goes on, a finding says why, and a release by this process ends it."""
    lockwise.reset()
    ctx = multiprocessing.get_context("fork")
    lock = ctx.Lock()
    p = ctx.Process(target=_die_holding, args=(lock, False), daemon=True)
    p.start()
    _finish(p)
    outcome: list[Any] = []

    def waiter() -> None:
        try:
            outcome.append(lock.acquire())
            lock.release()
        except BaseException as exc:  # noqa: BLE001
            outcome.append(exc)

    t = threading.Thread(target=waiter)
    t.start()
    try:
        deadline = time.monotonic() + 20
        found: list[Any] = []
        while not found:
            assert time.monotonic() < deadline, "no dead-holder finding"
            found = [f for f in lockwise.findings("deadlock")
                     if f.details.get("rule") == "dead holder"]
            time.sleep(0.02)
        assert found[0].details["dead_pid"] == p.pid
        assert found[0].details["raised"] is False
        assert not outcome  # still waiting
    finally:
        lock.release()  # the hand-off: any process may release a Lock
        t.join(10)
    assert not t.is_alive()
    assert outcome == [True]


def test_threads_of_one_process_abba_on_multiprocessing_locks(mp_shared: str) -> None:
    ctx = multiprocessing.get_context("fork")
    a, b = ctx.Lock(), ctx.Lock()
    barrier = threading.Barrier(2, timeout=10)
    results: dict[str, Any] = {}

    def run(name: str, first: Any, second: Any) -> None:
        try:
            with first:
                barrier.wait()
                with second:
                    results[name] = "got"
        except lockwise.DeadlockError:
            results[name] = "deadlock"

    threads = [threading.Thread(target=run, args=("T1", a, b)),
               threading.Thread(target=run, args=("T2", b, a))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not any(t.is_alive() for t in threads)
    assert sorted(results.values()) == ["deadlock", "got"]


def test_a_lock_held_by_a_parent_thread_at_fork_is_no_hazard_and_no_deadlock(
        mp_shared: str) -> None:
    """The semaphore is shared: the parent's thread releases it, the child's
    wait ends. Not a fork hazard, not an owner that exited."""
    lockwise.reset()
    ctx = multiprocessing.get_context("fork")
    lock, held, done = ctx.Lock(), threading.Event(), ctx.Event()
    go = threading.Event()

    def holder() -> None:
        with lock:
            held.set()
            go.wait(20)
            time.sleep(0.5)

    t = threading.Thread(target=holder)
    t.start()
    try:
        assert held.wait(10)
        p = ctx.Process(target=_take_and_report, args=(lock, done), daemon=True)
        p.start()
        go.set()
        assert _finish(p) == [0]
        assert done.is_set()
    finally:
        go.set()
        t.join(10)
    assert not lockwise.findings("fork-hazard")


def _child_after_fork_holding(lock: Any, rlock: Any, other: Any, out: Any) -> None:
    """In a child forked while this thread held ``lock`` and ``rlock``."""
    held = [type(x).__name__ for x in lockwise.held_locks()]
    with other:  # no lock-order edge from the parent's locks
        pass
    edges = [f.summary for f in lockwise.findings("lock-order")]
    try:
        rlock.release()  # the parent's thread owns it, as in multiprocessing
        rlock_released = "yes"
    except (RuntimeError, AssertionError):
        rlock_released = "no"
    lock.release()  # any process may release a Lock: a hand-off to the parent
    out.put((held, edges, rlock_released, lock.holder()))


def test_a_child_forked_by_a_holder_holds_none_of_its_multiprocessing_locks(
        mp_shared: str) -> None:
    # multiprocessing.Pool's terminate takes its inqueue's _rlock and never
    # gives it back; a process forked after that inherited it in lockwise's
    # held list, and every lock the child took was ordered after it: CPython's
    # pool and manager tests under lockwise showed lock-order inversions.
    lockwise.reset()
    ctx = multiprocessing.get_context("fork")
    lock, rlock, other, out = ctx.Lock(), ctx.RLock(), threading.Lock(), ctx.Queue()
    lock.acquire()
    rlock.acquire()
    try:
        p = ctx.Process(target=_child_after_fork_holding, args=(lock, rlock, other, out),
                        daemon=True)
        p.start()
        held, edges, rlock_released, holder = out.get(timeout=60)
        assert _finish(p) == [0]
        assert held == [] and edges == []
        assert rlock_released == "no"
        assert holder is None  # the child's release cleared the slot
        # Handed back by the child: free, with this thread still its owner on
        # record. Taken again (the untimed call's C fast path, then the timed
        # one's slow path), it is held once, not once per ownership.
        assert lock.acquire() is True
        assert lockwise.held_locks().count(lock) == 1
        lock._mp._semlock.release()  # handed off again, as another process does it
        assert lock.acquire(timeout=10) is True
        assert lockwise.held_locks().count(lock) == 1
        lock.release()
    finally:
        rlock.release()
    # in this process the locks are this thread's as before the fork
    assert lockwise.held_locks() == []


def _report_held_and_order(other: Any, out: Any) -> None:
    held = [repr(x) for x in lockwise.held_locks()]
    with other:
        pass
    out.put((held, [f.summary for f in lockwise.findings("lock-order")]))


def test_a_process_started_while_holding_a_thread_lock_orders_nothing_after_it(
        mp_shared: str) -> None:
    # A manager's server holds Server.mutex while it starts a Pool's workers:
    # each worker inherited it as held, and ordered every lock it took after
    # it; CPython's manager pool tests under lockwise reported an inversion.
    lockwise.reset()
    ctx = multiprocessing.get_context("fork")
    outer, other, out = threading.Lock(), threading.Lock(), ctx.Queue()
    with other, outer:  # this process's order: other -> outer
        pass
    with outer:
        p = ctx.Process(target=_report_held_and_order, args=(other, out), daemon=True)
        p.start()
        held, inversions = out.get(timeout=60)
    assert _finish(p) == [0]
    assert held == [] and inversions == []
    # a plain os.fork() child goes on in the forking frames: it keeps them
    read, write = os.pipe()
    with outer:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            os.write(write, str(len(lockwise.held_locks())).encode())
            os._exit(0)
    os.close(write)
    try:
        assert os.read(read, 16) == b"1"
    finally:
        os.close(read)
        os.waitpid(pid, 0)


def test_each_lock_of_a_queue_is_a_class_of_its_own(mp_shared: str) -> None:
    """Sites of locks made inside multiprocessing are multiprocessing's own
    lines (``SimpleQueue._rlock`` and ``_wlock`` differ), not the program's
    line that made the queue: one class for every lock of a Pool ordered them
    as one, and reported their order as an inversion."""
    q = multiprocessing.get_context("fork").SimpleQueue()
    sites = {q._rlock._site.label, q._wlock._site.label}
    assert len(sites) == 2, sites
    assert all("queues.py" in lock._site.filename for lock in (q._rlock, q._wlock))
    here = multiprocessing.get_context("fork").Lock()
    assert here._site.filename == __file__


def test_one_thread_waits_for_a_lock_another_process_hands_back(mp_shared: str) -> None:
    """A Lock taken by acquire() and waited on again by the same (only) thread
    is a latch another process may open: not "nobody left to run"."""
    ctx = multiprocessing.get_context("fork")
    latch = ctx.Lock()
    latch.acquire()

    def opener(lock: Any) -> None:
        time.sleep(0.8)
        lock.release()

    p = ctx.Process(target=opener, args=(latch,), daemon=True)
    p.start()
    try:
        assert latch.acquire(True) is True  # untimed: no DeadlockError
        latch.release()
    finally:
        _finish(p)


def test_condition_on_a_recursive_lock_releases_every_level(mp_shared: str) -> None:
    ctx = multiprocessing.get_context("fork")
    cond = ctx.Condition()  # on ctx.RLock(): an MPRLock
    assert isinstance(cond._lock, _mp.MPRLock)
    waiting = threading.Event()
    result: list[bool] = []

    def waiter() -> None:
        with cond, cond:
            waiting.set()
            result.append(cond.wait(10))

    t = threading.Thread(target=waiter)
    t.start()
    try:
        assert waiting.wait(10)
        assert cond.acquire(timeout=10), "wait() did not release both levels"
        try:
            cond.notify()
        finally:
            cond.release()
    finally:
        t.join(15)
    assert result == [True]


def test_event_and_queue_across_processes(mp_shared: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    assert isinstance(q._rlock, _mp.MPLock)
    lock, done = ctx.Lock(), ctx.Event()
    p = ctx.Process(target=_take_and_report, args=(lock, done), daemon=True)
    p.start()
    assert _finish(p) == [0]
    assert done.wait(5)
    q.put("x")
    assert q.get(timeout=10) == "x"
    q.close()
    q.join_thread()


def test_pickling_outside_spawning_is_refused_as_by_multiprocessing(mp_shared: str) -> None:
    lock = multiprocessing.get_context("spawn").Lock()
    with pytest.raises(RuntimeError, match="inheritance"):
        pickle.dumps(lock)


def test_introspection_and_misuse(mp_shared: str) -> None:
    ctx = multiprocessing.get_context("fork")
    lock = ctx.Lock()
    assert lock.holder() is None
    with lock:
        assert lock.holder() == {"pid": os.getpid(), "thread": threading.get_ident()}
        assert lock.owner is threading.current_thread()
        assert "locked" in repr(lock)
        assert lock.acquire(False) is False
    assert lock.holder() is None
    rlock = ctx.RLock()
    with pytest.raises(RuntimeError):
        rlock.release()


#: multiprocessing's acquire(block=True, timeout=None), as positional and keyword
#: arguments: a non-blocking call ignores its timeout, a negative timeout is 0.
ACQUIRE_CALLS: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    ((False,), {}), ((False, 1), {}), ((False, None), {}), ((True, 0.05), {}), ((True, -1), {}),
    ((True, 0), {}), ((), {"block": False}), ((), {"timeout": 0.05}),
    ((), {"block": False, "timeout": 5}), ((1, -3.5), {}),
]


@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_acquire_takes_multiprocessings_arguments(mp_shared: str, kind: str) -> None:
    # multiprocessing's own lock is the oracle: its Queue.get(block, timeout)
    # passes its arguments straight through (timeout=None), and a threading-
    # style reading of them raised TypeError (CPython's test_logging).
    ctx = multiprocessing.get_context("fork")
    ours = getattr(ctx, kind)()
    theirs = _mp.ORIGINAL[kind](ctx=ctx)
    assert isinstance(ours, _mp.MPLock if kind == "Lock" else _mp.MPRLock)
    for args, kwargs in ACQUIRE_CALLS:
        for lock in (ours, theirs):  # free: every call takes it
            assert lock.acquire(*args, **kwargs) is True, (kind, args, kwargs)
            lock.release()
    assert ours.acquire(timeout=None) is True
    ours.release()

    held = threading.Event()
    done = threading.Event()

    def hold() -> None:
        with ours, theirs:
            held.set()
            done.wait(30)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    try:
        assert held.wait(30)
        for args, kwargs in ACQUIRE_CALLS:
            answers = []
            for lock in (ours, theirs):  # held by another thread: every call fails
                start = time.monotonic()
                answers.append(lock.acquire(*args, **kwargs))
                answers.append(time.monotonic() - start < 2)  # no wait is long
            assert answers == [False, True, False, True], (kind, args, kwargs)
        start = time.monotonic()
        assert ours.acquire(timeout=0.2) is False
        assert time.monotonic() - start >= 0.15
        for call in (lambda: ours.acquire(blocking=False), lambda: ours.acquire(1, 2, 3)):
            with pytest.raises(TypeError):
                call()
    finally:
        done.set()
        holder.join(30)
    assert not holder.is_alive()


def test_uninstall_restores_multiprocessing(tmp_path: Any, monkeypatch: Any) -> None:
    import multiprocessing.synchronize as sync

    monkeypatch.delenv("LOCKWISE_MULTIPROCESSING", raising=False)
    with lockwise.installed():
        assert sync.Lock is _mp.MPLock
        assert isinstance(multiprocessing.get_context("fork").RLock(), _mp.MPRLock)
    assert sync.Lock is _mp.ORIGINAL["Lock"]
    assert sync.RLock is _mp.ORIGINAL["RLock"]
    assert not isinstance(multiprocessing.get_context("fork").Lock(), _mp.MPLock)


@pytest.mark.parametrize("value", ["0", " 0 "])
def test_multiprocessing_is_left_alone_when_opted_out(monkeypatch: Any, value: str) -> None:
    import multiprocessing.synchronize as sync

    monkeypatch.setenv("LOCKWISE_MULTIPROCESSING", value)
    with lockwise.installed():
        assert sync.Lock is _mp.ORIGINAL["Lock"]
        assert not isinstance(multiprocessing.get_context("fork").Lock(), _mp.MPLock)
        assert type(multiprocessing.get_context("fork").Semaphore(1)) is sync.Semaphore


def _release_later(lock: Any, delay: float) -> None:
    """Give back a lock this process never took (a hand-off between processes)."""
    time.sleep(delay)
    lock.release()


def test_the_loop_thread_waiting_on_its_own_bare_acquired_lock_is_not_raised(
        mp_shared: str) -> None:
    # The event loop's thread took a multiprocessing.Lock by a bare acquire()
    # and waits for it again: another process may release it, so this is no
    # "loop blocks on a lock it owns" deadlock (nor a stall): the child's
    # release ends the wait.
    import asyncio

    import lockwise.aio  # noqa: F401  (registers the loop thread's check)

    ctx = multiprocessing.get_context("fork")
    lock = ctx.Lock()
    lock.acquire()
    child = ctx.Process(target=_release_later, args=(lock, 1.5))

    async def main() -> bool:
        child.start()
        return bool(lock.acquire())  # blocks the loop's thread until the child releases

    try:
        assert asyncio.run(main()) is True
    finally:
        assert _finish(child) == [0]
    lock.release()
    assert lockwise.findings("deadlock") == []

