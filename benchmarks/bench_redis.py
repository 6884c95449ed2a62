"""RedisLock against redis-py's own Lock, side by side on one private server.

``run(quick=False)`` starts its own ``redis-server`` (loopback, no
persistence), measures both locks in the same run and returns rows with
``name``, ``baseline`` (redis-py ``Lock``), ``lockwise`` (``RedisLock``),
``ratio`` (lockwise / baseline) and ``note``; every figure is in seconds
per operation (lower is better). It returns [] if redis-server or redis-py
is missing. Standalone: ``python benchmarks/bench_redis.py [--quick]``.

Load: THREADS threads in this process, each looping acquire / increment a
key / release on one lock for a fixed time. redis-py's Lock polls while
blocked (``sleep`` = 1 ms here, its best case; its default is 100 ms);
RedisLock blocks in BLPOP and is woken by the release.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable

THREADS = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_server() -> tuple[subprocess.Popen[bytes], int, str]:
    port = _free_port()
    folder = tempfile.mkdtemp(prefix="lockwise-bench-redis-")
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", folder],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, port, folder
        except OSError:
            time.sleep(0.02)
    proc.kill()
    raise RuntimeError("redis-server did not start")


def _uncontended(make: Callable[[], Any], n: int) -> float:
    lock = make()
    for _ in range(min(n, 50)):
        lock.acquire()
        lock.release()
    start = time.perf_counter()
    for _ in range(n):
        lock.acquire()
        lock.release()
    return (time.perf_counter() - start) / n


def _load(make: Callable[[], Any], client: Any, key: str,
          seconds: float) -> tuple[float, list[float]]:
    latencies: list[list[float]] = []
    counts: list[int] = []
    barrier = threading.Barrier(THREADS + 1)

    def work() -> None:
        lock = make()
        mine: list[float] = []
        n = 0
        barrier.wait()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t0 = time.perf_counter()
            lock.acquire()
            mine.append(time.perf_counter() - t0)
            client.incr(key)
            lock.release()
            n += 1
        latencies.append(mine)
        counts.append(n)

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    for t in threads:
        t.start()
    barrier.wait()
    for t in threads:
        t.join(seconds + 60)
    total = sum(counts)
    assert int(client.get(key)) == total, "lost update"
    flat = sorted(x for part in latencies for x in part)
    return seconds / max(total, 1), flat


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(q * len(values)))]


def run(quick: bool = False) -> list[dict[str, Any]]:
    if shutil.which("redis-server") is None:
        return []
    try:
        import redis
    except ImportError:
        return []
    from lockwise.redis import RedisLock

    proc, port, folder = _start_server()
    try:
        client = redis.Redis(host="127.0.0.1", port=port)
        n = 300 if quick else 3000
        seconds = 0.5 if quick else 2.0
        base_make = lambda: client.lock("bench:plain", timeout=10, sleep=0.001)  # noqa: E731
        ours_make = lambda: RedisLock(client, "bench", ttl=10)  # noqa: E731
        rows = []
        b = _uncontended(base_make, n)
        o = _uncontended(ours_make, n)
        rows.append({"name": "redis: acquire+release, uncontended", "baseline": b,
                     "lockwise": o, "ratio": o / b,
                     "note": "one round trip each way; lockwise also records the holder's "
                             "details and a fencing token"})
        b_op, b_lat = _load(base_make, client, "bench:count:plain", seconds)
        o_op, o_lat = _load(ours_make, client, "bench:count:ours", seconds)
        rows.append({"name": f"redis: {THREADS} threads, time per increment under the lock",
                     "baseline": b_op, "lockwise": o_op, "ratio": o_op / b_op,
                     "note": f"throughput {1 / b_op:.0f}/s vs {1 / o_op:.0f}/s; "
                             "no update lost (checked)"})
        for q, label in ((0.5, "p50"), (0.99, "p99")):
            bq, oq = _pct(b_lat, q), _pct(o_lat, q)
            rows.append({"name": f"redis: acquire latency {label} under load ({THREADS} threads)",
                         "baseline": bq, "lockwise": oq, "ratio": oq / bq if bq else float("nan"),
                         "note": "redis-py polls every 1 ms; RedisLock waits in BLPOP"})
        return rows
    finally:
        proc.kill()
        proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    rows = run(quick="--quick" in sys.argv)
    if not rows:
        print("redis-server or redis-py unavailable: nothing measured")
        return
    print(f"{'benchmark':<62} {'redis-py':>11} {'lockwise':>11} {'ratio':>7}")
    for row in rows:
        print(f"{row['name']:<62} {row['baseline'] * 1e6:>9.1f}us {row['lockwise'] * 1e6:>9.1f}us"
              f" {row['ratio']:>7.2f}  {row['note']}")


if __name__ == "__main__":
    main()
