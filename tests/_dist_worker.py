"""Worker processes for test_distributed (run as ``python _dist_worker.py JSON``).

Each scenario prints one JSON line with its result on stdout. Processes
coordinate through marker files (``touch``/``wait_file``), never sleeps alone.
"""

from __future__ import annotations

import faulthandler
import json
import os
import sys
import threading
import time
from typing import Any

import lockwise


def touch(path: str) -> None:
    with open(path, "w"):
        pass


def wait_file(path: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.002)


def make_lock(args: dict[str, Any], name: str, **kw: Any) -> Any:
    if args["backend"] == "file":
        return lockwise.FileLock(os.path.join(args["dir"], name + ".lock"), name=name, **kw)
    import redis

    from lockwise.redis import RedisLock

    client = redis.Redis.from_url(args["url"])
    return RedisLock(client, name, ttl=args.get("ttl", 5.0), **kw)


def abba(args: dict[str, Any]) -> dict[str, Any]:
    first, second = make_lock(args, args["first"]), make_lock(args, args["second"])
    with first:
        touch(os.path.join(args["dir"], args["me"]))
        wait_file(os.path.join(args["dir"], args["other"]))
        try:
            with second:
                return {"result": "acquired"}
        except lockwise.DeadlockError as exc:
            return {"result": "deadlock", "text": str(exc),
                    "threads": exc.finding.threads if exc.finding else []}


def hold(args: dict[str, Any]) -> dict[str, Any]:
    lock = make_lock(args, args["name"])
    token = lock.acquire()
    with open(os.path.join(args["dir"], "held.tmp"), "w") as f:
        f.write(str(token))
    os.rename(os.path.join(args["dir"], "held.tmp"), os.path.join(args["dir"], "held"))
    time.sleep(60)  # killed by the test
    return {}


def fenced(args: dict[str, Any]) -> dict[str, Any]:
    import redis

    client = redis.Redis.from_url(args["url"])
    write = client.register_script(FENCED_WRITE)
    lock = make_lock(args, args["name"])
    token = lock.acquire()
    first = write(keys=["resource"], args=[token, f"pid {os.getpid()} first"])
    touch(os.path.join(args["dir"], "held"))
    wait_file(os.path.join(args["dir"], "go"))  # we were stopped and resumed meanwhile
    believes = lock.owned()
    lost = lock.lost
    second = write(keys=["resource"], args=[token, f"pid {os.getpid()} stale"])
    try:
        lock.release()
        release = "ok"
    except Exception as exc:
        release = type(exc).__name__
    return {"token": token, "first_write": first, "believes": believes, "lost": lost,
            "stale_write": second, "release": release}


#: A resource that refuses writes whose token is below the highest seen.
FENCED_WRITE = """
local top = tonumber(redis.call('GET', KEYS[1] .. ':token') or '0')
if tonumber(ARGV[1]) < top then return 0 end
redis.call('SET', KEYS[1] .. ':token', ARGV[1])
redis.call('RPUSH', KEYS[1] .. ':log', ARGV[2])
return 1
"""


def counter(args: dict[str, Any]) -> dict[str, Any]:
    path = args["counter"]
    # Made (redis imported) before the clock starts: under load, importing
    # took longer than the test's seconds and no thread ever got to work.
    locks = [make_lock(args, "counter") for _ in range(args["threads"])]
    wait_file(os.path.join(args["dir"], "start"))
    deadline = time.monotonic() + args["seconds"]
    done: list[int] = []

    def work(lock: Any) -> None:
        n = 0
        while time.monotonic() < deadline:
            with lock:
                with open(path) as f:
                    value = int(f.read() or "0")
                with open(path, "w") as f:
                    f.write(str(value + 1))
            n += 1
        done.append(n)

    threads = [threading.Thread(target=work, args=(lock,)) for lock in locks]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return {"increments": sum(done), "threads": len(done)}


def order(args: dict[str, Any]) -> dict[str, Any]:
    lockwise.configure(on_lock_order="log")
    first, second = make_lock(args, args["first"]), make_lock(args, args["second"])
    with first, second:
        pass
    return {"findings": [f.to_dict() for f in lockwise.findings("lock-order")]}


def main() -> None:
    # A worker still running after 25 s is hung: print every thread's stack to
    # stderr, which the test shows when its 30 s wait gives up.
    faulthandler.dump_traceback_later(25)
    args = json.loads(sys.argv[1])
    if args.get("shared_dir"):
        lockwise.configure(shared_dir=args["shared_dir"])
    result = globals()[args["scenario"]](args)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
