"""Costs that could grow with the number of waiters (issue 19, section 3).

* asyncio: 10,000 tasks gathered on one ``Semaphore(10)``, 3,000 tasks on one
  ``Lock``, and 2,000 acquires of a ``Semaphore`` released by another task than
  the acquirer (its holders must not pile up): lockwise's ``aio`` classes vs
  asyncio's, in one process, interleaved rounds. Waiting must cost O(1) per
  wait, not O(waiters) per loop iteration.
* threads: 1,000 threads blocked on one ``threading.Event`` for a second,
  then set: ``python -m lockwise run`` vs ``python``, wall time and CPU time
  (user + system, from the child's resource usage), start-up included.
  Blocked threads must not poll: they would cost a GIL hand-off each.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from _common import row

PROGRAM = Path(__file__).resolve().parent / "_event_threads.py"


# ---------------------------------------------------------------- asyncio

async def _job(sem: Any, work: float) -> None:
    async with sem:
        await asyncio.sleep(work)


async def _gathered(make: Callable[[], Any], n: int, work: float = 0.0) -> None:
    sem = make()
    await asyncio.gather(*(_job(sem, work) for _ in range(n)))


async def _foreign(make: Callable[[], Any], n: int) -> None:
    sem = make()

    async def releaser() -> None:
        for _ in range(n):
            await asyncio.sleep(0)
            sem.release()

    await asyncio.gather(releaser(), *(sem.acquire() for _ in range(n)))


def _timed(coro: Callable[[], Any]) -> float:
    start = time.perf_counter()
    asyncio.run(coro())
    return time.perf_counter() - start


#: Why an asyncio row can miss 1.5x, measured (3.13: the rows' programs with
#: lockwise.aio.track_loops(False) as a third side): the per-acquire bookkeeping
#: of lockwise.aio's classes, which are Python (the C accelerator serves thread
#: locks only); the loop-iteration hook is 0 to 0.15x of the ratio.
_AIO_WHY = ("per-acquire bookkeeping in lockwise.aio's Python classes (bench_aio: 2.7-3.8x "
            "per uncontended acquire; the C accelerator serves thread locks only); the "
            "loop-iteration hook is 0-0.15x of the ratio (A/B with aio.track_loops(False)). "
            "Waiting is O(1) per wait: the row with 1 ms of work holds at about 1.2x")


def _aio_row(name: str, base: Callable[[], Any], lw: Callable[[], Any], rounds: int,
             note: str) -> dict[str, Any]:
    _timed(base)
    _timed(lw)
    tb: list[float] = []
    tl: list[float] = []
    for i in range(rounds):
        if i % 2:
            tl.append(_timed(lw))
            tb.append(_timed(base))
        else:
            tb.append(_timed(base))
            tl.append(_timed(lw))
    ratio = statistics.median(w / b for b, w in zip(tb, tl))
    return row(name, statistics.median(tb), statistics.median(tl), ratio, 1.5, note=note,
               why=_AIO_WHY)


def _asyncio_rows(quick: bool) -> list[dict[str, Any]]:
    from lockwise import aio

    rounds = 3 if quick else 9
    scale = 10 if quick else 1
    n_sem, n_lock, n_foreign = 10000 // scale, 3000 // scale, 2000 // scale
    return [
        _aio_row(f"asyncio: {n_sem:,} tasks gathered on one Semaphore(10), 1 ms of work each",
                 lambda: _gathered(lambda: asyncio.Semaphore(10), n_sem, 0.001),
                 lambda: _gathered(lambda: aio.Semaphore(10), n_sem, 0.001), rounds,
                 "whole run; each task holds it across asyncio.sleep(0.001)"),
        _aio_row(f"asyncio: {n_sem:,} tasks gathered on one Semaphore(10), no work",
                 lambda: _gathered(lambda: asyncio.Semaphore(10), n_sem),
                 lambda: _gathered(lambda: aio.Semaphore(10), n_sem), rounds,
                 "each task holds it across asyncio.sleep(0): the per-acquire "
                 "bookkeeping alone (bench_aio: 3x per uncontended acquire)"),
        _aio_row(f"asyncio: {n_lock:,} tasks gathered on one Lock",
                 lambda: _gathered(asyncio.Lock, n_lock),
                 lambda: _gathered(aio.Lock, n_lock), rounds,
                 "whole run; up to all tasks queued at once"),
        _aio_row(f"asyncio: {n_foreign:,} Semaphore acquires released by another task",
                 lambda: _foreign(lambda: asyncio.Semaphore(0), n_foreign),
                 lambda: _foreign(lambda: aio.Semaphore(0), n_foreign), rounds,
                 "holders of a signal semaphore must not pile up"),
    ]


# ---------------------------------------------------------------- threads

def _run(cmd: list[str], env: dict[str, str], limit: float = 300) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system) of ``cmd``, which must exit 0."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    killer = threading.Timer(limit, proc.kill)
    killer.start()
    try:
        _pid, status, usage = os.wait4(proc.pid, 0)
    finally:
        killer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    return wall, usage.ru_utime + usage.ru_stime


_THREADS_WHY = {
    "pure": "pure Python: each of the threads registers its wait and runs one deadlock "
            "check as Python code, and every lock, Condition and Event call is a Python-level "
            "call (the [pure] rows of bench_core); the targets are for the C accelerator",
    "c": "each thread still registers its wait once and checks once; what remains is mostly "
         "GIL hand-offs at thread start and wake-up",
}


def _thread_rows(quick: bool) -> list[dict[str, Any]]:
    rounds = 3 if quick else 7
    n = "200" if quick else "1000"
    rows = []
    for label, pure in (("pure", "1"), ("c", "0")):
        env = dict(os.environ, LOCKWISE_PURE=pure, BENCH_THREADS=n, BENCH_HOLD="1.0")
        plain = [sys.executable, str(PROGRAM)]
        wrapped = [sys.executable, "-m", "lockwise", "run", "--quiet", str(PROGRAM)]
        base: list[tuple[float, float]] = []
        lw: list[tuple[float, float]] = []
        for i in range(rounds):
            if i % 2:
                lw.append(_run(wrapped, env))
                base.append(_run(plain, env))
            else:
                base.append(_run(plain, env))
                lw.append(_run(wrapped, env))
        for what, k in (("wall", 0), ("CPU", 1)):
            ratio = statistics.median(w[k] / b[k] for b, w in zip(base, lw))
            rows.append(row(f"threads: {int(n):,} blocked on one Event for 1 s, {what} time "
                            f"[{label}]",
                            statistics.median(b[k] for b in base),
                            statistics.median(w[k] for w in lw), ratio, 1.5,
                            note="`lockwise run` vs `python`, start-up included",
                            why=_THREADS_WHY[label]))
    return rows


def run(quick: bool) -> list[dict[str, Any]]:
    return _asyncio_rows(quick) + _thread_rows(quick)
