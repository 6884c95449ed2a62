"""Locks across processes (FileLock) and machines (RedisLock): real processes, real server."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

import lockwise

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "_dist_worker.py")
sys.path.insert(0, HERE)

from _redis_server import RedisServer  # noqa: E402

needs_redis = pytest.mark.skipif(shutil.which("redis-server") is None,
                                 reason="redis-server is not installed (apt-get install "
                                        "redis-server); the Redis tests need a real server")


@pytest.fixture
def shared(tmp_path: Any) -> Any:
    """A private shared store directory for this test, in this process too."""
    directory = str(tmp_path / "store")
    old = lockwise.configure(shared_dir=directory)
    try:
        yield directory
    finally:
        lockwise.configure(**old)


@pytest.fixture
def server() -> Any:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    pytest.importorskip("redis")
    srv = RedisServer()
    srv.start()
    try:
        yield srv
    finally:
        srv.close()


class Procs:
    """Worker processes, each killed in teardown if still running."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, **args: Any) -> subprocess.Popen[str]:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [os.path.join(os.path.dirname(HERE), "src"), os.environ.get("PYTHONPATH", "")]))
        proc = subprocess.Popen([sys.executable, WORKER, json.dumps(args)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env)
        self.procs.append(proc)
        return proc

    @staticmethod
    def result(proc: subprocess.Popen[str], timeout: float = 30) -> dict[str, Any]:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            _out, err = proc.communicate(timeout=10)
            raise AssertionError(f"worker hung; its stderr:\n{err}") from None
        assert proc.returncode == 0, err
        return dict(json.loads(out.strip().splitlines()[-1]))

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.kill(proc.pid, signal.SIGCONT)
                except OSError:
                    pass
                proc.kill()
            proc.communicate(timeout=10)


@pytest.fixture
def procs() -> Any:
    p = Procs()
    try:
        yield p
    finally:
        p.close()


def wait_file(path: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"timed out waiting for {path}"
        time.sleep(0.005)


def backend_args(backend: str, tmp_path: Any, shared: str, server: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"backend": backend, "dir": str(tmp_path), "shared_dir": shared}
    if backend == "redis":
        args["url"] = server.url
    return args


@pytest.fixture(params=["file", pytest.param("redis", marks=needs_redis)])
def backend(request: Any, tmp_path: Any, shared: str) -> Any:
    srv = request.getfixturevalue("server") if request.param == "redis" else None
    return backend_args(request.param, tmp_path, shared, srv)


# ---------------------------------------------------------------- both backends


def test_abba_across_two_processes(backend: dict[str, Any], procs: Procs) -> None:
    a = procs.start(scenario="abba", first="orders", second="stock", me="p1", other="p2",
                    **backend)
    b = procs.start(scenario="abba", first="stock", second="orders", me="p2", other="p1",
                    **backend)
    results = [procs.result(a), procs.result(b)]
    outcomes = sorted(r["result"] for r in results)
    assert outcomes == ["acquired", "deadlock"], results
    loser = next(r for r in results if r["result"] == "deadlock")
    text = loser["text"]
    assert "orders" in text and "stock" in text
    pids = {str(p.pid) for p in (a, b)}
    for pid in pids:
        assert f"pid {pid}" in text, text
    assert len(loser["threads"]) == 2


def test_lock_order_inversion_across_processes_without_freezing(
        backend: dict[str, Any], procs: Procs) -> None:
    first = procs.result(procs.start(scenario="order", first="accounts", second="ledger",
                                     **backend))
    assert first["findings"] == []
    second = procs.result(procs.start(scenario="order", first="ledger", second="accounts",
                                      **backend))
    assert len(second["findings"]) == 1, second
    finding = second["findings"][0]
    assert finding["kind"] == "lock-order"
    assert {lock["name"] for lock in finding["locks"]} == {"accounts", "ledger"}
    assert "across processes" in finding["summary"]


@pytest.mark.timeout(90)
def test_load_no_update_lost(backend: dict[str, Any], procs: Procs, tmp_path: Any) -> None:
    counter = tmp_path / "counter.txt"
    counter.write_text("0")
    workers = [procs.start(scenario="counter", counter=str(counter), threads=3, seconds=1.5,
                           **backend) for _ in range(3)]
    (tmp_path / "start").touch()
    results = [procs.result(w, timeout=60) for w in workers]
    total = sum(r["increments"] for r in results)
    assert all(r["threads"] == 3 for r in results)
    assert total > 30, results  # it made progress
    assert int(counter.read_text()) == total


# ---------------------------------------------------------------- FileLock


def test_filelock_api_and_per_thread_ownership(tmp_path: Any, shared: str) -> None:
    lock = lockwise.FileLock(tmp_path / "a.lock")
    assert not lock.locked()
    assert lock.acquire() is True
    assert lock.locked() and lock.owner is threading.current_thread()
    assert "owner=MainThread" in repr(lock) and lock.acquired_at
    assert lock in lockwise.held_locks()
    holder = lock.holder()
    assert holder is not None and holder["pid"] == os.getpid()
    got: list[bool] = []
    t = threading.Thread(target=lambda: got.append(lock.acquire(timeout=0.1)))
    t.start()
    t.join(5)
    assert got == [False]  # another thread of the same process must wait
    lock.release()
    assert not lock.locked() and lock.owner is None and lock.holder() is None
    other = lockwise.FileLock(tmp_path / "a.lock")
    with other:
        assert not lock.acquire(blocking=False)  # two objects, one file: exclusive
    r = lockwise.FileLock(tmp_path / "r.lock", reentrant=True)
    with r, r:
        assert r.count == 2
    assert r.count == 0 and not r.locked()


def test_filelock_release_by_other_thread_is_refused(tmp_path: Any, shared: str) -> None:
    lock = lockwise.FileLock(tmp_path / "a.lock")
    lock.acquire()
    errors: list[BaseException] = []

    def other() -> None:
        try:
            lock.release()
        except RuntimeError as exc:
            errors.append(exc)

    t = threading.Thread(target=other)
    t.start()
    t.join(5)
    assert len(errors) == 1 and lock.locked()
    lock.release()


def test_cycle_mixing_local_lock_and_filelock_in_one_process(tmp_path: Any,
                                                               shared: str) -> None:
    old = lockwise.configure(on_lock_order="log")  # the inversion is expected here
    try:
        _mixed_cycle(tmp_path)
    finally:
        lockwise.configure(**old)


def _mixed_cycle(tmp_path: Any) -> None:
    local = lockwise.Lock()
    flock = lockwise.FileLock(tmp_path / "f.lock")
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def t1() -> None:
        with local:
            barrier.wait()
            try:
                with flock:
                    outcomes.append("t1 ok")
            except lockwise.DeadlockError:
                outcomes.append("t1 deadlock")

    def t2() -> None:
        with flock:
            barrier.wait()
            try:
                with local:
                    outcomes.append("t2 ok")
            except lockwise.DeadlockError:
                outcomes.append("t2 deadlock")

    threads = [threading.Thread(target=t1), threading.Thread(target=t2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not any(t.is_alive() for t in threads)
    assert sorted(o.split()[1] for o in outcomes) == ["deadlock", "ok"], outcomes


def _hold_f_then_wait_g(fpath: str, gpath: str, ready: Any, go: Any) -> None:
    f, g = lockwise.FileLock(fpath), lockwise.FileLock(gpath)
    with f:
        ready.set()
        if not go.wait(20):
            os._exit(4)
        try:
            with g:
                pass
        except lockwise.DeadlockError:
            os._exit(3)
    os._exit(0)


def test_a_link_through_a_bare_acquire_is_no_edge_across_processes(tmp_path: Any,
                                                                   shared: str) -> None:
    """The main thread took a local Lock by acquire() (a hand-off: a third
    thread releases it later) and waits for F, held by another process, which
    waits for G, held by T1, which waits for the local Lock. Not a deadlock:
    the third thread's release ends it. The link T1 -> main used to be
    published like a with-block's and closed a false cycle across processes."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    fpath, gpath = str(tmp_path / "f.lock"), str(tmp_path / "g.lock")
    local = lockwise.Lock()
    g = lockwise.FileLock(gpath)
    ready, go = ctx.Event(), ctx.Event()
    t1_waiting = threading.Event()
    outcomes: list[str] = []
    local.acquire()
    proc = ctx.Process(target=_hold_f_then_wait_g, args=(fpath, gpath, ready, go))
    proc.start()

    def t1() -> None:
        with g:
            t1_waiting.set()
            with local:
                outcomes.append("t1 ok")

    def opener() -> None:
        time.sleep(1.5)  # every wait registered and checked more than twice
        local.release()

    threads = [threading.Thread(target=t1), threading.Thread(target=opener)]
    try:
        assert ready.wait(20)
        threads[0].start()
        assert t1_waiting.wait(20)
        go.set()
        threads[1].start()
        f = lockwise.FileLock(fpath)
        try:
            with f:
                outcomes.append("main ok")
        except lockwise.DeadlockError as exc:
            outcomes.append(f"main deadlock: {exc}")
    finally:
        go.set()
        for t in threads:
            if t.ident is not None:
                t.join(20)
        proc.join(20)
        if proc.is_alive():
            proc.kill()
            proc.join(10)
    assert proc.exitcode == 0, (proc.exitcode, outcomes)
    assert sorted(outcomes) == ["main ok", "t1 ok"]


def test_filelock_wait_backs_off_while_the_store_is_off(tmp_path: Any, shared: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """With detection off (an unfit or stalled store), a blocked FileLock still
    polls with its backoff (up to 10 ms), never with zero-length sleeps."""
    lock = lockwise.FileLock(tmp_path / "a.lock")
    other = lockwise.FileLock(tmp_path / "a.lock")
    assert lock._store is not None
    lock._store.disable("test: the store is off")
    me = threading.get_ident()
    sleeps: list[float] = []
    real_sleep = time.sleep

    def counting(seconds: float) -> None:
        if threading.get_ident() == me:
            sleeps.append(seconds)
        real_sleep(seconds)

    held, go = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            held.set()
            go.wait(5)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert held.wait(5)
        monkeypatch.setattr(time, "sleep", counting)
        assert not other.acquire(timeout=0.3)
    finally:
        go.set()
        t.join(5)
    assert not t.is_alive()
    assert 0 < len(sleeps) < 100, f"{len(sleeps)} pauses in 0.3 s: a busy wait"


def test_filelock_holder_killed(tmp_path: Any, shared: str, procs: Procs) -> None:
    holder = procs.start(scenario="hold", backend="file", name="job", dir=str(tmp_path),
                         shared_dir=shared)
    wait_file(tmp_path / "held")
    lock = lockwise.FileLock(tmp_path / "job.lock", name="job")
    assert not lock.acquire(timeout=0.1)
    store = lock._store
    assert store is not None
    assert [h["pid"] for h in store.holders()] == [holder.pid]
    holder.kill()
    holder.wait(10)
    start = time.monotonic()
    assert lock.acquire(timeout=10)
    assert time.monotonic() - start < 5
    # dead process's records are gone (cleaned on the next store write)
    store.wait("file:/nonexistent", "probe", "?", True)
    store.end_wait()
    assert {h["pid"] for h in store.holders()} == {os.getpid()}
    assert all(w["pid"] != holder.pid for w in store.waits())
    lock.release()


# ---------------------------------------------------------------- Redis


@needs_redis
def test_redis_lock_api(server: Any) -> None:
    import redis

    from lockwise.redis import RedisLock

    client = redis.Redis.from_url(server.url)
    lock = RedisLock(client, "orders", ttl=1.0)
    token = lock.acquire()
    assert isinstance(token, int) and token > 0 and lock.token == token
    assert lock.locked() and lock.owned() and lock.owner is threading.current_thread()
    assert lock in lockwise.held_locks()
    info = lock.holder()
    assert info is not None and info["pid"] == str(os.getpid()) and info["token"] == str(token)
    assert all(k.startswith(b"lockwise:") for k in client.keys("*"))
    time.sleep(1.2)  # past the TTL: the renewer keeps it
    assert lock.owned() and client.pttl("lockwise:lock:orders") > 0
    got: list[Any] = []
    t = threading.Thread(target=lambda: got.append(lock.acquire(timeout=0.2)))
    t.start()
    t.join(5)
    assert got == [False]
    lock.release()
    assert not lock.locked()
    assert lock.acquire() > token  # fencing tokens increase with every grant
    lock.release()
    # a client can never release or extend a lock it does not hold
    other = RedisLock(client, "orders")
    t2 = threading.Thread(target=other.acquire)
    t2.start()
    t2.join(5)
    assert lock._release(keys=[lock._k_lock, lock._k_info, lock._k_wake],
                         args=[lockwise._shared_store.participant(), other._token, 1000]) == 0
    assert lock._extend(keys=[lock._k_lock, lock._k_info],
                        args=[lockwise._shared_store.participant(), other._token, 1000]) == 0
    assert other.locked()


@needs_redis
def test_redis_blocking_acquire_wakes_on_release(server: Any) -> None:
    import redis

    from lockwise.redis import RedisLock

    client = redis.Redis.from_url(server.url)
    lock = RedisLock(client, "wake", ttl=5)
    lock.acquire()
    waited: list[float] = []
    ready = threading.Event()

    def waiter() -> None:
        mine = RedisLock(client, "wake", ttl=5)
        ready.set()
        start = time.monotonic()
        mine.acquire(timeout=5)
        waited.append(time.monotonic() - start)
        mine.release()

    t = threading.Thread(target=waiter)
    t.start()
    ready.wait(5)
    time.sleep(0.3)
    released = time.monotonic()
    lock.release()
    t.join(10)
    assert waited and time.monotonic() - released < 5
    assert waited[0] - 0.3 < 0.09  # woken by the release, not by the 0.1 s fallback


@needs_redis
def test_redis_holder_killed(server: Any, procs: Procs, tmp_path: Any) -> None:
    import redis

    from lockwise.redis import RedisLock

    holder = procs.start(scenario="hold", backend="redis", name="job", ttl=1.0,
                         url=server.url, dir=str(tmp_path))
    wait_file(tmp_path / "held")
    old_token = int((tmp_path / "held").read_text())
    client = redis.Redis.from_url(server.url)
    lock = RedisLock(client, "job", ttl=1.0)
    assert lock.acquire(timeout=0.1) is False
    assert lock.holder()["pid"] == str(holder.pid)
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)
    start = time.monotonic()
    token = lock.acquire(timeout=5)
    assert token and token > old_token
    assert time.monotonic() - start <= 1.0 + 0.3  # within the TTL (plus one re-check)
    assert lock.holder()["pid"] == str(os.getpid())
    for key in client.keys("lockwise:*"):
        if client.type(key) == b"string":
            assert f"|{holder.pid}|".encode() not in (client.get(key) or b"")
    lock.release()


@needs_redis
@pytest.mark.timeout(60)
def test_redis_paused_holder_is_fenced(server: Any, procs: Procs, tmp_path: Any) -> None:
    import redis
    from _dist_worker import FENCED_WRITE

    from lockwise.redis import RedisLock

    client = redis.Redis.from_url(server.url)
    write = client.register_script(FENCED_WRITE)
    paused = procs.start(scenario="fenced", backend="redis", name="res", ttl=1.0,
                         url=server.url, dir=str(tmp_path))
    wait_file(tmp_path / "held")
    paused.send_signal(signal.SIGSTOP)
    try:
        lock = RedisLock(client, "res", ttl=1.0)
        start = time.monotonic()
        token = lock.acquire(timeout=10)
        assert token and time.monotonic() - start < 2.5
        assert write(keys=["resource"], args=[token, "new holder"]) == 1
        (tmp_path / "go").touch()
    finally:
        paused.send_signal(signal.SIGCONT)
    result = procs.result(paused)
    assert result["first_write"] == 1
    assert token > result["token"]
    assert result["believes"] is False and result["lost"] is True  # knows it lost the lease
    assert result["stale_write"] == 0  # the resource refused the old token
    assert result["release"] == "LeaseLostError"
    assert lock.owned()
    log = client.lrange("resource:log", 0, -1)
    assert log[-1] == b"new holder" and not any(b"stale" in x for x in log)
    lock.release()


@needs_redis
@pytest.mark.timeout(60)
def test_redis_restart_while_held(server: Any) -> None:
    import redis

    from lockwise.redis import LeaseLostError, RedisLock

    client = redis.Redis.from_url(server.url, socket_timeout=2, socket_connect_timeout=1)
    lost = threading.Event()
    lock = RedisLock(client, "restart", ttl=1.0, on_lost=lambda _l: lost.set())
    token = lock.acquire()
    waiter_result: list[Any] = []
    started = threading.Event()

    def waiter() -> None:
        other = RedisLock(client, "restart", ttl=1.0)
        started.set()
        waiter_result.append(other.acquire(timeout=6))
        if waiter_result[-1]:
            other.release()

    server.stop()
    t = threading.Thread(target=waiter)
    t.start()
    started.wait(5)
    time.sleep(0.3)
    server.start()  # same port, empty: no persistence
    assert lost.wait(5), "the holder was not told that its lease was lost"
    assert lock.lost and not lock.owned()
    t.join(10)
    assert not t.is_alive()
    assert waiter_result and waiter_result[0] and waiter_result[0] > token
    with pytest.raises(LeaseLostError):
        lock.release()
    assert lock.acquire(timeout=5) > token
    lock.release()


# ---------------------------------------------------------------- exactly one raises


def _in_threads(steps: list[tuple[int, Any]]) -> list[Any]:
    """Run each (thread number, fn) in order, each in its own of two
    long-lived threads (participants are per thread); the results."""
    import queue

    inbox: list[queue.Queue[Any]] = [queue.Queue(), queue.Queue()]
    outbox: queue.Queue[Any] = queue.Queue()

    def worker(q: queue.Queue[Any]) -> None:
        while True:
            fn = q.get()
            if fn is None:
                return
            try:
                outbox.put(("ok", fn()))
            except BaseException as exc:  # noqa: BLE001 - reported to the test
                outbox.put(("raised", exc))

    threads = [threading.Thread(target=worker, args=(q,), daemon=True) for q in inbox]
    for t in threads:
        t.start()
    results = []
    try:
        for n, fn in steps:
            inbox[n].put(fn)
            state, value = outbox.get(timeout=20)
            if state == "raised":
                raise value
            results.append(value)
    finally:
        for q in inbox:
            q.put(None)
        for t in threads:
            t.join(10)
    return results


def test_filelock_store_cycle_seen_by_one_waiter_only(shared: str) -> None:
    from lockwise import _shared_store

    store = _shared_store.store_for(shared)
    x, y = "file:/x", "file:/y"
    results = _in_threads([
        (0, lambda: store.add_holder(x, "x", "?", "?")),
        (1, lambda: store.add_holder(y, "y", "?", "?")),
        (0, lambda: store.wait(y, "y", "?", False)),  # no cycle yet
        (1, lambda: store.wait(x, "x", "?", False)),  # closes it: raises
        # the first waiter re-checks before the second has unwound
        (0, lambda: store.wait(y, "y", "?", False)),
        (0, store.end_wait), (0, lambda: store.remove_holder(x)),
        (1, store.end_wait), (1, lambda: store.remove_holder(y)),
    ])
    assert results[2] is None and results[3] is not None
    assert results[4] is None, "a second waiter of one cycle saw it too"


@needs_redis
def test_redis_cycle_seen_by_one_waiter_only(server: Any) -> None:
    import redis

    from lockwise.redis import RedisLock

    client = redis.Redis.from_url(server.url)
    locks = [{n: RedisLock(client, n, ttl=5) for n in "xy"} for _ in range(2)]
    who: list[str] = []
    results = _in_threads([
        (0, lambda: who.append(lockwise._shared_store.participant())),
        (1, lambda: who.append(lockwise._shared_store.participant())),
        (0, lambda: locks[0]["x"].acquire()),
        (1, lambda: locks[1]["y"].acquire()),
        (0, lambda: locks[0]["y"]._check(who[0], False, None)),
        (1, lambda: locks[1]["x"]._check(who[1], False, None)),
        (0, lambda: locks[0]["y"]._check(who[0], False, None)),
        (0, locks[0]["x"].release), (1, locks[1]["y"].release),
    ])
    assert results[4] is None and results[5] is not None
    assert results[6] is None, "a second waiter of one cycle saw it too"


def test_a_transaction_left_open_by_an_interrupt_is_rolled_back(tmp_path: Any,
                                                                shared: str) -> None:
    # An asynchronous exception just after BEGIN returned (a signal handler's)
    # used to leave the store's connection in a transaction: every later call
    # failed with "cannot start a transaction within a transaction", and
    # detection across processes was turned off for the lock (seen on 3.12).
    from lockwise import _findings

    lock = lockwise.FileLock(tmp_path / "t.lock")
    with lock:
        pass
    store = lock._store
    assert store is not None and store.off is None
    before = len(_findings.internal_errors())
    store._conn().execute("BEGIN IMMEDIATE")  # as the interrupt left it
    with lock:
        assert lock.holder() is not None
    assert lock.holder() is None
    assert store.off is None
    assert _findings.internal_errors()[before:] == []
