"""RedisLock under server faults: real redis-server processes on 127.0.0.1.

Each test injects one fault: kill -9 and restart with each persistence mode,
SIGSTOP/SIGCONT, requirepass. Every wait is bounded; threads are joined
with timeouts and a paused server is always resumed.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from typing import Any, Callable

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _redis_server import RedisServer  # noqa: E402

pytestmark = [
    pytest.mark.skipif(shutil.which("redis-server") is None,
                       reason="redis-server is not installed (apt-get install redis-server); "
                              "the fault tests need a real server"),
    pytest.mark.timeout(90),
]

redis = pytest.importorskip("redis")

from lockwise.redis import CALL_MARGIN, LeaseLostError, RedisLock, ServerError  # noqa: E402


@pytest.fixture
def servers() -> Any:
    started: list[RedisServer] = []

    def make(**kw: Any) -> RedisServer:
        srv = RedisServer(**kw)
        started.append(srv)
        srv.start()
        return srv

    try:
        yield make
    finally:
        for srv in started:
            srv.close()


def in_thread(fn: Callable[[], Any], timeout: float) -> tuple[str, Any, float]:
    """Run ``fn`` in a daemon thread: ("ok", result) or ("raised", exc), and
    the seconds it took; ("hung", None) if it did not end within ``timeout``."""
    out: list[Any] = []

    def run() -> None:
        start = time.monotonic()
        try:
            out.append(("ok", fn(), time.monotonic() - start))
        except BaseException as exc:
            out.append(("raised", exc, time.monotonic() - start))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    return out[0] if out else ("hung", None, timeout)


def wait_until(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


# ---------------------------------------------------------------- fencing


@pytest.mark.parametrize("persistence", ["none", "rdb", "aof"])
def test_tokens_strictly_increase_across_a_crash(servers: Any, persistence: str) -> None:
    srv = servers(persistence=persistence)
    client = redis.Redis.from_url(srv.url, socket_timeout=5)
    lock = RedisLock(client, "fence", ttl=5)
    tokens = []
    for _ in range(3):
        tokens.append(lock.acquire(timeout=5))
        lock.release()
    if persistence == "rdb":
        assert client.save()  # the snapshot holds the counter as of now
    for _ in range(5):  # granted after the snapshot: lost by the crash
        tokens.append(lock.acquire(timeout=5))
        lock.release()
    assert tokens == sorted(set(tokens))
    srv.kill()
    srv.start()
    client.connection_pool.disconnect()
    after = []
    for _ in range(3):
        after.append(lock.acquire(timeout=5))
        lock.release()
    assert all(after), after
    assert min(after) > max(tokens), (persistence, tokens, after)
    assert after == sorted(set(after))


# ---------------------------------------------------------------- authentication


@pytest.mark.parametrize("password", [None, "wrong"])
def test_bad_password_raises_at_once_naming_the_server(servers: Any,
                                                       password: Any) -> None:
    srv = servers(password="s3cret")
    client = redis.Redis(host="127.0.0.1", port=srv.port, password=password)
    lock = RedisLock(client, "auth", ttl=2)
    for call in (lock.acquire, lambda: lock.acquire(timeout=3),
                 lambda: lock.acquire(blocking=False)):
        state, exc, took = in_thread(call, 10)
        assert state == "raised", (state, exc)  # not hung, not False
        assert isinstance(exc, ServerError) and isinstance(exc, redis.RedisError)
        assert f"127.0.0.1:{srv.port}" in str(exc) and "\n" not in str(exc)
        assert took < 1.0
    good = RedisLock(redis.Redis(host="127.0.0.1", port=srv.port, password="s3cret"), "auth")
    assert good.acquire(timeout=2)
    good.release()


# ---------------------------------------------------------------- timeouts


@pytest.mark.parametrize("fault", ["killed", "stopped"])
def test_timed_acquire_returns_in_time_when_server_fails(servers: Any, fault: str) -> None:
    srv = servers()
    # redis-py's defaults: no socket timeout, retries with backoff.
    client = redis.Redis(host="127.0.0.1", port=srv.port)
    lock = RedisLock(client, "down", ttl=2)
    assert lock.acquire(timeout=2)  # connections are open before the fault
    lock.release()
    if fault == "killed":
        srv.kill()
    else:
        srv.pause()
    try:
        for timeout in (0.2, 0.5):
            state, result, took = in_thread(lambda t=timeout: lock.acquire(timeout=t), 20)
            assert state == "ok" and result is False, (state, result)
            assert took < timeout + CALL_MARGIN + 0.15, (timeout, took)
    finally:
        srv.resume()


@pytest.mark.timeout(60)
def test_a_stalled_server_does_not_delay_renewals_on_another(servers: Any) -> None:
    a, b = servers(), servers()
    lock_a = RedisLock(redis.Redis(host="127.0.0.1", port=a.port), "x", ttl=1.0)
    client_b = redis.Redis(host="127.0.0.1", port=b.port, socket_timeout=5)
    lock_b = RedisLock(client_b, "x", ttl=1.0)
    assert lock_a.acquire(timeout=2) and lock_b.acquire(timeout=2)
    a.pause()
    try:
        time.sleep(2.5)  # more than two leases
        assert lock_b.owned() and not lock_b.lost
        assert client_b.pttl("lockwise:lock:x") > 0
        assert lock_a.lost and not lock_a.owned()  # its lease could not be renewed
    finally:
        a.resume()
    lock_b.release()
    with pytest.raises(LeaseLostError):
        lock_a.release()


# ---------------------------------------------------------------- restarts


@pytest.mark.timeout(60)
def test_restart_without_persistence_old_holder_stops_believing_at_once(
        servers: Any) -> None:
    srv = servers()
    client = redis.Redis(host="127.0.0.1", port=srv.port, socket_timeout=2)
    lost = threading.Event()
    old = RedisLock(client, "job", ttl=6.0, on_lost=lambda _l: lost.set())
    token = old.acquire(timeout=2)
    assert old.owned()
    srv.kill()
    # The server's death closed the renewer's idle connection: the lease is
    # unconfirmed long before the ttl/3 renewal, and before any restart.
    assert wait_until(lambda: not old.owned(), 1.0)
    assert not old.lost
    srv.start()  # empty
    new: list[Any] = []
    seen_owned_after_grant: list[bool] = []

    def other() -> None:
        lock = RedisLock(client, "job", ttl=6.0)
        new.append(lock.acquire(timeout=5))
        seen_owned_after_grant.append(old.owned())
        if new[-1]:
            lock.release()

    t = threading.Thread(target=other)
    t.start()
    t.join(10)
    assert not t.is_alive() and new and new[0] > token
    assert seen_owned_after_grant == [False]
    assert lost.wait(2) and old.lost and not old.owned()
    with pytest.raises(LeaseLostError):
        old.release()


@pytest.mark.timeout(60)
def test_restart_with_aof_keeps_the_lease(servers: Any) -> None:
    srv = servers(persistence="aof")
    client = redis.Redis(host="127.0.0.1", port=srv.port, socket_timeout=2)
    lock = RedisLock(client, "kept", ttl=6.0)
    token = lock.acquire(timeout=2)
    srv.kill()
    assert wait_until(lambda: not lock.owned(), 1.0)
    srv.start()  # the AOF still has the lock: the renewal confirms it
    assert wait_until(lock.owned, 3.0) and not lock.lost and lock.token == token
    other = RedisLock(client, "kept", ttl=6.0)
    state, result, _took = in_thread(lambda: other.acquire(timeout=0.3), 10)
    assert (state, result) == ("ok", False)
    lock.release()


def test_renewer_thread_ends_and_gives_back_its_ident(servers: Any) -> None:
    from lockwise import _state

    srv = servers()
    lock = RedisLock(redis.Redis(host="127.0.0.1", port=srv.port), "r", ttl=2)
    lock.acquire(timeout=2)
    renewer = lock._server.renewer
    ident = renewer._ident
    assert renewer._running and wait_until(lambda: ident in _state.internal_threads, 2.0)
    # not a threading.Thread: a program joining every thread must not join it
    assert ident not in {t.ident for t in threading.enumerate()}
    lock.release()
    assert wait_until(lambda: not renewer._running and ident not in sys._current_frames(), 5.0)
    # a program thread reusing the ident must not be taken for lockwise's
    assert ident not in _state.internal_threads
