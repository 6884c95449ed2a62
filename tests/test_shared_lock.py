"""The cross-process locks share one acquire/wait/confirm algorithm (_shared_lock).

The confirmation rule is one function, :func:`lockwise._shared_lock.confirmed`;
both backends reach it: a fault injected there changes what FileLock *and*
RedisLock do with a cycle.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
from typing import Any

import pytest

import lockwise
from lockwise import _shared_lock

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _redis_server import RedisServer  # noqa: E402

needs_redis = pytest.mark.skipif(shutil.which("redis-server") is None,
                                 reason="redis-server is not installed (apt-get install "
                                        "redis-server); the Redis tests need a real server")


def _step(who: str, key: str, kind: str = "lock") -> dict[str, Any]:
    return {"who": who, "key": key, "kind": kind}


def test_a_cycle_of_locks_only_is_confirmed_at_once() -> None:
    path = [_step("p1", "x"), _step("p2", "y")]
    assert _shared_lock.confirmed(path, None)


def test_a_cycle_through_a_link_needs_two_sightings_of_the_same_cycle() -> None:
    path = [_step("p1", "x"), _step("p2", "p1", "thread")]
    assert not _shared_lock.confirmed(path, None)
    assert _shared_lock.confirmed(path, _shared_lock.cycle_of(path))
    other = [_step("p1", "z"), _step("p2", "p1", "thread")]
    assert not _shared_lock.confirmed(path, _shared_lock.cycle_of(other))


class Injected(Exception):
    """Raised by the replaced confirmation rule."""


@pytest.fixture(params=["FileLock", pytest.param("RedisLock", marks=needs_redis)])
def make_lock(request: Any, tmp_path: Any) -> Any:
    """``make_lock(name)``: a new lock object on the shared lock ``name``."""
    if request.param == "FileLock":
        old = lockwise.configure(shared_dir=str(tmp_path / "store"))
        try:
            yield lambda name: lockwise.FileLock(tmp_path / f"{name}.lock")
        finally:
            lockwise.configure(**old)
        return
    redis = pytest.importorskip("redis")
    from lockwise.redis import RedisLock

    server = RedisServer()
    server.start()
    try:
        client = redis.Redis.from_url(server.url)
        yield lambda name: RedisLock(client, name, ttl=5)
    finally:
        server.close()


@pytest.mark.timeout(60)
def test_both_backends_confirm_cycles_through_the_one_rule(
        make_lock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two threads (two participants) of this process, each with its own lock
    objects, take x and y in opposite orders: a cycle of shared locks only,
    found by the store. With the base's rule replaced by one that raises, the
    waiter that closes the cycle gets that exception instead of a
    DeadlockError: the backend has no rule of its own."""
    seen: list[list[dict[str, Any]]] = []

    def injected(path: list[dict[str, Any]], pending: Any) -> bool:
        seen.append(path)
        raise Injected()

    monkeypatch.setattr(_shared_lock, "confirmed", injected)
    locks = [{n: make_lock(n) for n in "xy"} for _ in range(2)]
    kind = type(locks[0]["x"]).__name__
    barrier = threading.Barrier(2)
    outcomes: dict[int, str] = {}

    def worker(i: int, first: str, second: str) -> None:
        mine = locks[i]
        with mine[first]:
            barrier.wait(10)
            try:
                with mine[second]:  # untimed: timed waits are not checked
                    outcomes[i] = "acquired"
            except Injected:
                outcomes[i] = "injected"
            except lockwise.DeadlockError:
                outcomes[i] = "deadlock"

    threads = [threading.Thread(target=worker, args=(0, "x", "y"), daemon=True),
               threading.Thread(target=worker, args=(1, "y", "x"), daemon=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "the cycle was never broken"
    assert sorted(outcomes.values()) == ["acquired", "injected"], outcomes
    assert seen and all(step["type"] == kind for path in seen for step in path)
    assert sorted(step["name"] for step in seen[0]) == [locks[0]["x"].name, locks[0]["y"].name]


class Interrupt(BaseException):
    """An asynchronous exception (as Ctrl-C) coming out of acquire's bookkeeping."""


@pytest.mark.timeout(60)
def test_an_exception_after_the_grant_gives_the_lock_back(
        make_lock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever comes out of acquire after the store granted the lock, the
    base gives it back through the backend: no other participant is locked
    out (the grant is released, not left to a lease or to the process's end)."""
    from lockwise import _primitives

    lock, other = make_lock("x"), make_lock("x")
    granted = type(lock)._granted

    def interrupted(self: Any, grant: Any) -> Any:
        granted(self, grant)
        raise Interrupt()

    monkeypatch.setattr(type(lock), "_granted", interrupted)
    with pytest.raises(Interrupt):
        lock.acquire()
    monkeypatch.undo()
    assert lock.owner is None and lock not in _primitives.current_state().held
    result: list[Any] = []

    def take_and_give_back() -> None:
        result.append(other.acquire(blocking=False))
        if result[-1]:
            other.release()

    t = threading.Thread(target=take_and_give_back)
    t.start()
    t.join(10)
    assert not t.is_alive() and result and result[0], "the interrupted grant was kept"
