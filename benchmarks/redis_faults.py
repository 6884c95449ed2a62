"""Redis locks under server faults: lockwise's RedisLock against redis-py's
``Lock``, python-redis-lock and portalocker's ``RedisLock``, same faults.

Run: ``python benchmarks/redis_faults.py`` (needs ``redis-server`` and the
three libraries: ``pip install python-redis-lock portalocker``; they are not
lockwise dependencies). Each scenario starts its own server on 127.0.0.1
(``tests/_redis_server.py``) and runs every lock call in a daemon thread
bounded by ``LIMIT`` seconds, so a lock that hangs shows as "hung".
Each implementation runs in its own process. Prints a Markdown table
(docs/redis-comparison.md holds one run).

Scenarios:

* fencing after an RDB crash: 3 grants, ``SAVE``, 5 grants, ``kill -9``,
  restart, 3 grants: do the new tokens exceed every old one?
* wrong password: what an untimed ``acquire()`` does;
* ``acquire(timeout=0.2)`` on a server stopped with SIGSTOP, and on a
  killed server: seconds until it returns or raises;
* restart without persistence: after a new holder got the lock, does the
  old holder still believe it holds it?
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any, Callable

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import redis  # noqa: E402
from _redis_server import RedisServer  # noqa: E402

LIMIT = 12.0
TTL = 5.0


def bounded(fn: Callable[[], Any], limit: float = LIMIT) -> tuple[str, Any, float]:
    out: list[Any] = []

    def run() -> None:
        start = time.monotonic()
        try:
            out.append(("ok", fn(), time.monotonic() - start))
        except BaseException as exc:  # reported in the table
            out.append(("raised", exc, time.monotonic() - start))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(limit)
    return out[0] if out else ("hung", None, limit)


class Impl:
    name = ""
    tokens = False

    def make(self, client: Any, key: str) -> Any:
        raise NotImplementedError

    def acquire(self, lock: Any, timeout: float | None) -> Any:
        raise NotImplementedError

    def release(self, lock: Any) -> None:
        lock.release()

    def token(self, lock: Any, got: Any) -> Any:
        return None

    def believes(self, lock: Any) -> str:
        return "n/a"


class Lockwise(Impl):
    name = "lockwise RedisLock"
    tokens = True

    def make(self, client: Any, key: str) -> Any:
        from lockwise.redis import RedisLock

        return RedisLock(client, key, ttl=TTL)

    def acquire(self, lock: Any, timeout: float | None) -> Any:
        return lock.acquire() if timeout is None else lock.acquire(timeout=timeout)

    def token(self, lock: Any, got: Any) -> Any:
        return got

    def believes(self, lock: Any) -> str:
        return "yes" if lock.owned() else "no"


class RedisPy(Impl):
    name = "redis-py Lock"

    def make(self, client: Any, key: str) -> Any:
        return client.lock(key, timeout=TTL)

    def acquire(self, lock: Any, timeout: float | None) -> Any:
        return lock.acquire(blocking_timeout=timeout)

    def believes(self, lock: Any) -> str:
        state, value, _ = bounded(lock.owned, 3)  # asks the server
        return ("yes" if value else "no") if state == "ok" else state


class PythonRedisLock(Impl):
    name = "python-redis-lock"

    def make(self, client: Any, key: str) -> Any:
        import redis_lock

        return redis_lock.Lock(client, key, expire=int(TTL), auto_renewal=True)

    def acquire(self, lock: Any, timeout: float | None) -> Any:
        # python-redis-lock takes whole seconds only (timeout=0.2 -> 1 s).
        return lock.acquire(timeout=None if timeout is None else max(1, round(timeout)))


class Portalocker(Impl):
    name = "portalocker RedisLock"
    tokens = True

    def make(self, client: Any, key: str) -> Any:
        from portalocker.redis import RedisLock

        return RedisLock(key, connection=client, fencing=True)

    def acquire(self, lock: Any, timeout: float | None) -> Any:
        return lock.acquire(timeout=timeout)

    def token(self, lock: Any, got: Any) -> Any:
        return lock.fence_token

    def believes(self, lock: Any) -> str:
        return "no" if lock.lost else "yes"


def describe(state: str, value: Any, took: float) -> str:
    if state == "hung":
        return f"hung (> {LIMIT:.0f} s)"
    if state == "raised":
        return f"{type(value).__name__} after {took:.2f} s"
    return f"returned {value!r} after {took:.2f} s"


def fencing(impl: Impl) -> str:
    if not impl.tokens:
        return "no tokens"
    srv = RedisServer(persistence="rdb")
    srv.start()
    try:
        client = redis.Redis(host="127.0.0.1", port=srv.port, socket_timeout=5)
        before = []
        for i in range(8):
            if i == 3:
                client.save()
            lock = impl.make(client, "fence")
            before.append(impl.token(lock, impl.acquire(lock, 5)))
            impl.release(lock)
        srv.kill()
        srv.start()
        client = redis.Redis(host="127.0.0.1", port=srv.port, socket_timeout=5)
        after = []
        for _ in range(3):
            lock = impl.make(client, "fence")
            after.append(impl.token(lock, impl.acquire(lock, 5)))
            impl.release(lock)
        if None in before or None in after:
            return "no tokens"
        repeated = sorted(set(before) & set(after))
        if min(after) > max(before):
            return "increase"
        return f"REPEATED ({len(repeated)} of 3)" if repeated else "went back"
    finally:
        srv.close()


def wrong_password(impl: Impl) -> str:
    srv = RedisServer(password="s3cret")
    srv.start()
    try:
        client = redis.Redis(host="127.0.0.1", port=srv.port, password="wrong")
        lock = impl.make(client, "auth")
        return describe(*bounded(lambda: impl.acquire(lock, None)))
    finally:
        srv.close()


def down(impl: Impl, fault: str) -> str:
    srv = RedisServer()
    srv.start()
    try:
        client = redis.Redis(host="127.0.0.1", port=srv.port)
        lock = impl.make(client, "down")
        impl.acquire(lock, 2)
        impl.release(lock)
        if fault == "stopped":
            srv.pause()
        else:
            srv.kill()
        lock = impl.make(client, "down")
        return describe(*bounded(lambda: impl.acquire(lock, 0.2)))
    finally:
        srv.resume()
        srv.close()


def restart(impl: Impl) -> str:
    srv = RedisServer()
    srv.start()
    try:
        client = redis.Redis(host="127.0.0.1", port=srv.port, socket_timeout=2)
        old = impl.make(client, "job")
        impl.acquire(old, 2)
        srv.kill()
        time.sleep(0.2)
        srv.start()
        new = impl.make(redis.Redis(host="127.0.0.1", port=srv.port, socket_timeout=2), "job")
        state, got, _ = bounded(lambda: impl.acquire(new, 5))
        if state != "ok" or not got:
            return f"new holder: {describe(state, got, 0)}"
        return f"old holder believes it holds: {impl.believes(old)}"
    finally:
        srv.close()


ROWS: list[tuple[str, Callable[[Impl], str]]] = [
    ("fencing tokens after RDB crash", fencing),
    ("untimed acquire, wrong password", wrong_password),
    ("acquire(timeout=0.2), server SIGSTOPped", lambda i: down(i, "stopped")),
    ("acquire(timeout=0.2), server killed", lambda i: down(i, "killed")),
    ("restart without persistence, new holder got it", restart),
]
IMPLS: list[Callable[[], Impl]] = [Lockwise, RedisPy, PythonRedisLock, Portalocker]


def column(index: int) -> None:
    """One implementation's cells, as JSON on stdout (run in its own process:
    ``import lockwise`` patches ``Thread.join``, which other libraries use)."""
    import json

    impl = IMPLS[index]()
    cells = []
    for _title, scenario in ROWS:
        try:
            cells.append(scenario(impl))
        except BaseException as exc:  # portalocker's on_lost interrupts the main thread
            cells.append(f"error: {type(exc).__name__}")
    print(json.dumps(cells), flush=True)
    os._exit(0)  # threads left hung by a scenario do not keep the process


def main() -> None:
    import json
    import subprocess

    if len(sys.argv) == 3 and sys.argv[1] == "--column":
        column(int(sys.argv[2]))
        return
    columns = []
    for index in range(len(IMPLS)):
        done = subprocess.run([sys.executable, os.path.abspath(__file__), "--column",
                               str(index)], capture_output=True, text=True, timeout=600)
        try:
            columns.append(json.loads(done.stdout.strip().splitlines()[-1]))
        except (ValueError, IndexError):
            columns.append(["error: no result"] * len(ROWS))
    print("| fault | " + " | ".join(impl().name for impl in IMPLS) + " |")
    print("|---" * (len(IMPLS) + 1) + "|")
    for row, (title, _scenario) in enumerate(ROWS):
        cells = [c[row].replace("|", "/") for c in columns]
        print(f"| {title} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
