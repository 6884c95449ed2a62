"""Helpers shared by the benchmark modules (not a benchmark itself)."""

from __future__ import annotations

import statistics
import subprocess
import threading
import time
from typing import Any, Callable, Optional

Timer = Callable[[int], float]  # runs n operations, returns elapsed seconds


def implementations() -> list[tuple[str, Any, Any]]:
    """(label, Lock, RLock) for every lockwise implementation available here."""
    from lockwise import _primitives

    impls: list[tuple[str, Any, Any]] = [("pure", _primitives.PureLock, _primitives.PureRLock)]
    if _primitives.IMPLEMENTATION == "c":
        impls.append(("c", _primitives.Lock, _primitives.RLock))
    else:
        try:
            from lockwise import _accel
        except ImportError:
            pass
        else:
            impls.append(("c", _accel.accelerate(_primitives.PureLock, _accel.LockBase),
                          _accel.accelerate(_primitives.PureRLock, _accel.RLockBase)))
    return impls


def compare(baseline: Timer, lockwise: Timer, n: int, rounds: int) -> tuple[float, float, float]:
    """Median seconds/op of each, and the median of per-round ratios (interleaved)."""
    baseline(max(1, n // 10))
    lockwise(max(1, n // 10))
    base: list[float] = []
    lw: list[float] = []
    ratios: list[float] = []
    for i in range(rounds):
        if i % 2:
            tl = lockwise(n)
            tb = baseline(n)
        else:
            tb = baseline(n)
            tl = lockwise(n)
        base.append(tb / n)
        lw.append(tl / n)
        ratios.append(tl / tb)
    return statistics.median(base), statistics.median(lw), statistics.median(ratios)


def row(name: str, base: Optional[float], lw: Optional[float], ratio: Optional[float],
        target: Optional[float] = None, note: str = "", why: str = "",
        **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "baseline": base, "lockwise": lw, "ratio": ratio,
                           "note": note}
    if target is not None and ratio is not None:
        out["target"] = f"<= {target:g}x"
        out["met"] = ratio <= target
        if not out["met"] and why:
            out["why"] = why
    out.update(extra)
    return out


def now() -> float:
    return time.perf_counter()


def acq_rel(lock: Any) -> Timer:
    """Timer: ``lock.acquire()`` then ``lock.release()``, n times."""
    def run(n: int) -> float:
        acquire, release = lock.acquire, lock.release
        del acquire, release  # natural code below: attribute lookups included
        t = now()
        for _ in range(n):
            lock.acquire()
            lock.release()
        return now() - t
    return run


def with_lock(lock: Any) -> Timer:
    """Timer: ``with lock: pass``, n times."""
    def run(n: int) -> float:
        t = now()
        for _ in range(n):
            with lock:
                pass
        return now() - t
    return run


def wall_time(cmd: list[str], env: dict[str, str], quiet: bool = False,
              limit: float = 300) -> float:
    """Seconds from starting ``cmd`` to its exit (it must exit with status 0).

    Waits with a blocking ``waitpid``: ``subprocess`` waits that take a
    timeout poll with sleeps growing to 50 ms, which rounds every measured
    time up by as much. A timer kills a process still running after ``limit``.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL if quiet else None)
    killer = threading.Timer(limit, proc.kill)
    killer.start()
    try:
        status = proc.wait()
    finally:
        killer.cancel()
    elapsed = time.perf_counter() - start
    if status != 0:
        raise subprocess.CalledProcessError(status, cmd)
    return elapsed
