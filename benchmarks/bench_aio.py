"""Overhead of lockwise.aio's locks against asyncio's, measured side by side.

``run(quick)`` returns one dict per case: ``name``, ``baseline`` and
``lockwise`` (seconds per operation, the median of several rounds, the two
interleaved in one process and one event loop), ``ratio`` and ``note``.
``python benchmarks/bench_aio.py [--quick]`` prints the table.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from typing import Any, Callable, Coroutine

from lockwise import aio

Case = Callable[[Any, int], Coroutine[Any, Any, None]]


async def _uncontended(lock_type: Any, n: int) -> None:
    lock = lock_type()
    for _ in range(n):
        async with lock:
            pass


async def _nested(lock_type: Any, n: int) -> None:
    outer = lock_type()  # two creation sites: two lock classes
    inner = lock_type()
    for _ in range(n):
        async with outer, inner:
            pass


async def _contended(lock_type: Any, n: int) -> None:
    lock = lock_type()
    per = max(1, n // 4)

    async def worker() -> None:
        for _ in range(per):
            async with lock:
                await asyncio.sleep(0)

    await asyncio.gather(*(worker() for _ in range(4)))


async def _semaphore(sem_type: Any, n: int) -> None:
    sem = sem_type(2)
    for _ in range(n):
        async with sem:
            pass


async def _condition(cond_type: Any, n: int) -> None:
    cond = cond_type()
    for _ in range(n):
        async with cond:
            cond.notify()


CASES: list[tuple[str, Case, Any, Any, str]] = [
    ("asyncio Lock uncontended", _uncontended, asyncio.Lock, aio.Lock,
     "async with; no other task"),
    ("asyncio Lock nested (known order)", _nested, asyncio.Lock, aio.Lock,
     "two locks, same order each time: chain-cache hit"),
    ("asyncio Lock contended (4 tasks)", _contended, asyncio.Lock, aio.Lock,
     "each hold yields once: waits and deadlock checks"),
    ("asyncio Semaphore(2) uncontended", _semaphore, asyncio.Semaphore, aio.Semaphore,
     "holder bookkeeping"),
    ("asyncio Condition acquire+notify", _condition, asyncio.Condition, aio.Condition,
     "lock bookkeeping through the Condition"),
]


def _time(case: Case, kind: Any, n: int) -> float:
    async def main() -> float:
        start = time.perf_counter()
        await case(kind, n)
        return time.perf_counter() - start

    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(main()) / n
    finally:
        loop.close()


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Measure every case; baseline and lockwise alternate within each round."""
    n = 2_000 if quick else 20_000
    rounds = 3 if quick else 7
    results = []
    for name, case, base_type, lw_type, note in CASES:
        base: list[float] = []
        lw: list[float] = []
        _time(case, base_type, n // 10)  # warm up both
        _time(case, lw_type, n // 10)
        for _ in range(rounds):
            base.append(_time(case, base_type, n))
            lw.append(_time(case, lw_type, n))
        b, w = statistics.median(base), statistics.median(lw)
        results.append({"name": name, "baseline": b, "lockwise": w,
                        "ratio": w / b if b else float("nan"), "note": note})
    return results


def main() -> None:
    quick = "--quick" in sys.argv
    rows = run(quick)
    print(f"{'case':38} {'asyncio':>10} {'lockwise':>10} {'ratio':>6}  note")
    for r in rows:
        print(f"{r['name']:38} {r['baseline'] * 1e6:8.2f}us {r['lockwise'] * 1e6:8.2f}us "
              f"{r['ratio']:6.2f}  {r['note']}")
    print(f"Python {sys.version.split()[0]}; median of rounds; seconds per operation shown in us")


if __name__ == "__main__":
    main()
