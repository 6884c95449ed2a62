"""The cost of contention profiling (``lockwise run --profile``, ``lockwise.profile()``).

* whole program: ``_program.py`` (the workload of bench_program) under
  ``lockwise run --profile`` and ``--profile-sample 100``, against plain
  ``lockwise run`` (median wall time, subprocesses interleaved);
* hot path: an uncontended ``with lock:`` inside ``lockwise.profile()``
  against the same without profiling, per implementation (pure, c);
* contended: 4 threads taking one lock in a loop, inside ``lockwise.profile()``
  (full, and ``sample=100``) against the same without profiling.

No target: the issue asks for the overhead to be measured and stated.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from _common import compare, implementations, row, wall_time

PROGRAM = Path(__file__).resolve().parent / "_program.py"


def _program_rows(quick: bool) -> list[dict[str, Any]]:
    rounds = 3 if quick else 7
    size = "2000" if quick else "20000"
    rows = []
    for label, pure in (("pure", "1"), ("c", "0")):
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKWISE")}
        env.update(LOCKWISE_PURE=pure, BENCH_PROGRAM_ITEMS=size)
        run = [sys.executable, "-m", "lockwise", "run"]
        plain = run + [str(PROGRAM)]
        variants = (("--profile", run + ["--profile", str(PROGRAM)]),
                    ("--profile-sample 100", run + ["--profile-sample", "100", str(PROGRAM)]))
        for option, cmd in variants:
            base: list[float] = []
            prof: list[float] = []
            for _ in range(rounds):
                base.append(wall_time(plain, env, quiet=True))
                prof.append(wall_time(cmd, env, quiet=True))
            ratio = statistics.median(p / b for b, p in zip(base, prof))
            rows.append(row(f"whole program: `lockwise run {option}` vs `lockwise run` [{label}]",
                            statistics.median(base), statistics.median(prof), ratio,
                            note=f"{size} tasks, wall time incl. start-up"))
    return rows


def _hot_path_rows(quick: bool) -> list[dict[str, Any]]:
    import lockwise
    from lockwise import _primitives

    profiled_classes = (_primitives.Lock, _primitives.PureLock)  # what profile() swaps
    n = 20_000 if quick else 200_000
    rounds = 3 if quick else 7
    rows = []
    for label, lock_cls, _rlock_cls in implementations():
        if lock_cls not in profiled_classes:
            continue
        lock = lock_cls()

        def timed(k: int, lock: Any = lock) -> float:
            t = time.perf_counter()
            for _ in range(k):
                with lock:
                    pass
            return time.perf_counter() - t

        def profiled(k: int, timed: Any = timed) -> float:
            with lockwise.profile():
                return float(timed(k))

        base, prof, ratio = compare(timed, profiled, n, rounds)
        rows.append(row(f"uncontended `with lock:` in lockwise.profile() vs not [{label}]",
                        base, prof, ratio, note=f"{n} acquire/release pairs, per op"))
    return rows


def _contended_rows(quick: bool) -> list[dict[str, Any]]:
    import threading

    import lockwise
    from lockwise import _primitives

    n = 5_000 if quick else 50_000
    rounds = 3 if quick else 7
    rows = []
    for label, lock_cls, _rlock_cls in implementations():
        if lock_cls not in (_primitives.Lock, _primitives.PureLock):
            continue
        lock = lock_cls()

        def four(k: int, lock: Any = lock) -> float:
            def work() -> None:
                for _ in range(k // 4):
                    with lock:
                        pass

            threads = [threading.Thread(target=work) for _ in range(4)]
            t = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            return time.perf_counter() - t

        for sample in (1, 100):
            def profiled(k: int, four: Any = four, sample: int = sample) -> float:
                with lockwise.profile(sample=sample):
                    return float(four(k))

            base, prof, ratio = compare(four, profiled, n, rounds)
            mode = "lockwise.profile()" if sample == 1 else "lockwise.profile(sample=100)"
            rows.append(row(f"4 threads contending, in {mode} vs not [{label}]",
                            base, prof, ratio, note=f"{n} acquires in all, time per acquire"))
    return rows


def run(quick: bool) -> list[dict[str, Any]]:
    return _hot_path_rows(quick) + _contended_rows(quick) + _program_rows(quick)
