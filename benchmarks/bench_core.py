"""Core costs: Lock/RLock hot path, nesting, contention, Condition, detection, scale.

Every timing compares lockwise (detection fully on, default settings) with
``threading`` in the same process, interleaved round by round; rows name the
lockwise implementation measured: ``[pure]`` (the Python reference) or
``[c]`` (the C accelerator, when built).
"""

from __future__ import annotations

import collections
import gc
import random
import statistics
import sys
import sysconfig
import threading
import time
import tracemalloc
from typing import Any, Callable

from _common import acq_rel, compare, implementations, now, row, with_lock

import lockwise

WHY_FLOOR = ("near the floor of wrapping a lock from C: the user's call reaches lockwise's C "
             "method (as much as the raw call, plus the base-type check CPython makes for a "
             "subclass instance); the inner lock is lockwise's own PyThread lock, tried and "
             "released from C without a method call, but PyThread_acquire_lock_timed reads the "
             "monotonic clock even for a zero timeout on 3.11+ (about 10% of the pair in perf) "
             "where threading.Lock is one atomic operation on 3.13; then owner, site and held "
             "entry are stored")


#: Running without the GIL (a free-threaded build with the GIL left off):
#: the section "free-threaded" of RESULTS.md, run by run.py in a subprocess.
FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED")) and not getattr(
    sys, "_is_gil_enabled", lambda: True)()

#: Why the C rows miss 1.5x without the GIL (3.13t), as measured with perf
#: (perf record of 5,000,000 acquire()+release() pairs in a function, 3.13.5t,
#: PYTHON_GIL=0: 400 ns a pair against threading's 203 ns).
WHY_FLOOR_FT = ("measured (perf, 3.13.5t): threading.Lock is a PyMutex there, one "
                "compare-exchange each way, with no clock read; lockwise's inner lock is a "
                "PyThread lock, which on 3.13 is still a POSIX semaphore: a try "
                "(PyThread_acquire_lock_timed(lock, 0, 0)) converts the zero timeout and reads "
                "the monotonic clock before sem_trywait (clock_gettime, the time conversions "
                "and the call: about 12% of the pair), and release is sem_post; the lock's "
                "owner field and the thread's held list are changed under per-object critical "
                "sections, which are no-ops with the GIL (PyCriticalSection_Begin/End: about "
                "8%); the thread's state is found through thread-local storage "
                "(__tls_get_addr, about 3%) instead of the GIL build's one-entry cache. "
                "A/B builds (measurement only, interleaved, 3.13.5t): calling sem_trywait "
                "directly instead of the PyThread try took the pair from 2.06x to 1.56-1.70x "
                "threading, and compiling the critical sections out as well to 1.55-1.66x; "
                "the rest is the bookkeeping the GIL build pays too (1.3-1.4x there). "
                "On 3.14 PyThread locks are PyMutexes: the clock read goes away")

#: Why contention misses 1.5x without the GIL, as measured (3.13.5t, PYTHON_GIL=0):
#: counting calls of the Python slow path during the rows' loops found 0.01-0.03%
#: of acquires there (7 to 52 of 200,000), so nearly all of the cost is in the
#: C fast path, and the inner lock alone accounts for it: the "floor" rows.
WHY_CONTEND_FT = ("without the GIL the threads really run at once, and nearly every acquire "
                  "stays on the C fast path (0.01-0.03% reached the Python slow path, counted "
                  "on 3.13.5t): the cost is the inner lock's. The 'floor: N threads contending' "
                  "rows drive lockwise's inner lock alone against threading.Lock with no "
                  "bookkeeping: a PyThread lock is a POSIX semaphore on 3.13, whose waiters "
                  "sleep and wake through the kernel, where threading.Lock's PyMutex spins "
                  "briefly and hands off; the rest is the bookkeeping of the uncontended rows. "
                  "On 3.14 PyThread locks are PyMutexes")

WHY_SCALE_FT = ("the ratio grew with the number of threads: a hidden shared write "
                "(a global counter, cache line or lock) serialises separate locks")


# ------------------------------------------------------------------ loops


def _nested(a: Any, b: Any, c: Any) -> Callable[[int], float]:
    def run(n: int) -> float:
        t = now()
        for _ in range(n):
            with a, b, c:
                pass
        return now() - t
    return run


def _nested2(a: Any, b: Any) -> Callable[[int], float]:
    def run(n: int) -> float:
        t = now()
        for _ in range(n):
            with a, b:
                pass
        return now() - t
    return run


def _floor_call(lock: Any) -> Callable[[int], float]:
    """The raw lock driven the way a wrapper must: acquire(False) + release."""
    def run(n: int) -> float:
        t = now()
        for _ in range(n):
            lock.acquire(False)
            lock.release()
        return now() - t
    return run


def _contend_raw(make: Callable[[], Any], threads: int) -> Callable[[int], float]:
    """``threads`` threads on one raw lock, acquire()+release() with no wrapper."""
    def run(n: int) -> float:
        lock = make()
        acquire, release = lock.acquire, lock.release
        per = max(1, n // threads)
        counter = [0]

        def work() -> None:
            for _ in range(per):
                acquire()
                counter[0] += 1
                release()

        elapsed = _timed_pool([work] * threads)
        assert counter[0] == per * threads
        return elapsed * n / (per * threads)
    return run


def _timed_pool(works: list[Callable[[], None]]) -> float:
    """Start one thread per ``works`` entry, release them together through a
    barrier, and return the seconds until all have finished."""
    start = threading.Barrier(len(works) + 1)

    def gated(work: Callable[[], None]) -> None:
        start.wait(30)
        work()

    pool = [threading.Thread(target=gated, args=(work,)) for work in works]
    for t in pool:
        t.start()
    start.wait(30)
    t0 = now()
    for t in pool:
        t.join(120)
    return now() - t0


def _contend(make: Callable[[], Any], threads: int = 4) -> Callable[[int], float]:
    """``threads`` threads on one lock: time per acquire, all together."""
    def run(n: int) -> float:
        lock = make()
        per = max(1, n // threads)
        counter = [0]

        def work() -> None:
            for _ in range(per):
                with lock:
                    counter[0] += 1

        elapsed = _timed_pool([work] * threads)
        assert counter[0] == per * threads
        return elapsed * n / (per * threads)
    return run


def _separate(make: Callable[[], Any], threads: int) -> Callable[[int], float]:
    """``threads`` threads, each on a lock of its own: time per acquire, all together."""
    def run(n: int) -> float:
        per = max(1, n // threads)

        def worker(lock: Any) -> Callable[[], None]:
            def work() -> None:
                for _ in range(per):
                    with lock:
                        pass
            return work

        elapsed = _timed_pool([worker(make()) for _ in range(threads)])
        return elapsed * n / (per * threads)
    return run


def _handoff(make_cond: Callable[[], Any]) -> Callable[[int], float]:
    """Producer/consumer through a Condition, one slot: every item is a wake-up."""
    def run(n: int) -> float:
        cond = make_cond()
        slot: collections.deque[int] = collections.deque()

        def consumer() -> None:
            for _ in range(n):
                with cond:
                    while not slot:
                        cond.wait(10)
                    slot.popleft()
                    cond.notify()

        t = threading.Thread(target=consumer)
        t0 = now()
        t.start()
        for i in range(n):
            with cond:
                while slot:
                    cond.wait(10)
                slot.append(i)
                cond.notify()
        t.join(120)
        return now() - t0
    return run


# ------------------------------------------------------------------ benchmarks


def _uncontended(quick: bool) -> list[dict[str, Any]]:
    n, rounds = (20_000, 9) if quick else (200_000, 21)
    rows = []
    tlock, trlock = threading.Lock(), threading.RLock()
    base_pair = acq_rel(tlock)
    rows.append(row("floor: threading.Lock acquire(False)+release vs acquire()+release",
                    *compare(base_pair, _floor_call(tlock), n, rounds),
                    note="what calling the inner lock from a wrapper costs, before any "
                         "bookkeeping"))
    for label, Lock, RLock in implementations():
        lock = Lock()
        rlock = RLock()
        target = 1.5
        why = (WHY_FLOOR_FT if FREE_THREADED else WHY_FLOOR) if label == "c" else \
            "pure Python: a Python-level method call alone costs about as much as the raw lock"
        rows.append(row(f"Lock acquire()+release() [{label}]",
                        *compare(base_pair, acq_rel(lock), n, rounds), target=target, why=why))
        rows.append(row(f"Lock `with` [{label}]",
                        *compare(with_lock(tlock), with_lock(lock), n, rounds),
                        target=target, why=why))
        rows.append(row(f"RLock acquire()+release() [{label}]",
                        *compare(acq_rel(trlock), acq_rel(rlock), n, rounds),
                        target=target, why=why))
        rows.append(row(f"RLock `with` [{label}]",
                        *compare(with_lock(trlock), with_lock(rlock), n, rounds),
                        target=target, why=why))
    try:
        from fastrlock.rlock import FastRLock  # type: ignore[import-not-found]
    except ImportError:
        rows.append(row("fastrlock (reference)", None, None, None, note="fastrlock not installed"))
    else:
        rows.append(row("fastrlock.FastRLock `with` (reference, not lockwise)",
                        *compare(with_lock(trlock), with_lock(FastRLock()), n, rounds),
                        note="third-party C RLock without any detection, for scale"))
    return rows


def _nesting(quick: bool) -> list[dict[str, Any]]:
    n, rounds = (10_000, 9) if quick else (100_000, 21)
    rows = []
    base = _nested(threading.Lock(), threading.Lock(), threading.Lock())
    for label, Lock, _RLock in implementations():
        a, b, c = Lock(name=f"bench.a.{label}"), Lock(name=f"bench.b.{label}"), \
            Lock(name=f"bench.c.{label}")
        _nested(a, b, c)(1)  # first time: records the order (slow path, once)
        rows.append(row(f"3 nested locks, known order [{label}]", *compare(base, _nested(a, b, c),
                        n, rounds), target=2.0,
                        why=("each nested acquire runs the lock-order check's fast path "
                             "(_order.note: a tuple of held sites and a set lookup) in Python"
                             if label == "pure" else
                             "three acquires at the single-lock floor above, plus the "
                             "order check's fast path (tuple of held sites, set lookup) in C "
                             "for the two nested ones")))
    base = _nested2(threading.Lock(), threading.Lock())
    for label, Lock, _RLock in implementations():
        x, y = [Lock() for _ in range(2)]  # one creation site: one lock class
        _nested2(x, y)(1)
        rows.append(row(f"2 nested locks of one site (accounts), known order [{label}]",
                        *compare(base, _nested2(x, y), n, rounds),
                        note=("as transfer(a, b) with both locks made by Account.__init__: "
                              "the order check's key adds the locks' serials")))
    return rows


def _contention(quick: bool) -> list[dict[str, Any]]:
    if FREE_THREADED:
        return []  # _parallel: 2, 4 and 8 threads
    n, rounds = (40_000, 5) if quick else (200_000, 9)
    rows = []
    for label, Lock, _RLock in implementations():
        rows.append(row(f"4 threads contending, throughput [{label}]",
                        *compare(_contend(threading.Lock), _contend(Lock), n, rounds),
                        target=1.5, note="time per acquire, all threads together",
                        why="a contended acquire takes the slow path: registered wait, "
                            "deadlock check, timed waits on the inner lock"))
    return rows


def _inner_lock_type() -> Any:
    """The C accelerator's inner lock type, or None without it."""
    try:
        from lockwise import _speedups
    except ImportError:
        return None
    return getattr(_speedups, "InnerLock", None)


def _parallel(quick: bool) -> list[dict[str, Any]]:
    """Free-threaded only: 2/4/8 threads on one lock, and on separate locks.

    On separate locks the threads run in parallel (as many as there are
    CPUs): lockwise must scale as threading does, with no hidden global lock
    or shared counter, so its ratio to threading must not grow with threads.
    """
    if not FREE_THREADED:
        return []
    n, rounds = (20_000, 5) if quick else (100_000, 9)
    rows = []
    inner = _inner_lock_type()
    if inner is not None:
        for threads in (2, 4, 8):
            rows.append(row(f"floor: {threads} threads contending, lockwise's inner lock vs "
                            "threading.Lock",
                            *compare(_contend_raw(threading.Lock, threads),
                                     _contend_raw(inner, threads), n, rounds),
                            note="acquire()+release() of the raw locks, no bookkeeping: "
                                 "what the C rows below start from"))
    for label, Lock, _RLock in implementations():
        target = 1.5 if label == "c" else None
        for threads in (2, 4, 8):
            rows.append(row(f"{threads} threads contending on one lock [{label}]",
                            *compare(_contend(threading.Lock, threads),
                                     _contend(Lock, threads), n, rounds),
                            target=target, note="time per acquire, all threads together",
                            why=WHY_CONTEND_FT))
        first = None
        for threads in (1, 2, 4, 8):
            base, lw, ratio = compare(_separate(threading.Lock, threads),
                                      _separate(Lock, threads), n, rounds)
            if first is None:
                first = ratio
            growth = ratio / first
            entry = row(f"{threads} threads on separate locks [{label}]", base, lw, ratio,
                        note=f"time per acquire, all threads together; ratio vs 1 thread: "
                             f"{growth:.2f}x")
            if threads > 1:
                entry.update(target="ratio within 25% of 1 thread's", met=growth <= 1.25,
                             why=WHY_SCALE_FT)
            rows.append(entry)
    return rows


def _condition(quick: bool) -> list[dict[str, Any]]:
    n, rounds = (1_000, 5) if quick else (5_000, 9)
    rows = []
    for label, Lock, _RLock in implementations():
        rows.append(row(f"Condition producer/consumer hand-off [{label}]",
                        *compare(_handoff(lambda: threading.Condition(threading.Lock())),
                                 _handoff(lambda Lock=Lock: lockwise.Condition(Lock())),
                                 n, rounds),
                        note="time per item (each item wakes the other thread)"))
    return rows


def _one_deadlock(Lock: Any) -> Any:
    """Seconds from the cycle closing (ABBA) to the first DeadlockError, or None."""
    lockwise.reset()
    a, b = Lock(), Lock()
    barrier = threading.Barrier(2)
    closed: list[float] = []
    raised: list[float] = []

    def first() -> None:
        with a:
            barrier.wait(10)
            try:
                with b:
                    pass
            except lockwise.DeadlockError:
                raised.append(now())

    def second() -> None:
        with b:
            barrier.wait(10)
            deadline = now() + 10
            while not b.waiters and now() < deadline:  # until first() blocks on b
                time.sleep(0)
            closed.append(now())  # the next line closes the cycle
            try:
                with a:
                    pass
            except lockwise.DeadlockError:
                raised.append(now())

    pool = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(30)
    if closed and raised:
        return min(raised) - closed[0]
    return None


def _latency(quick: bool) -> list[dict[str, Any]]:
    rounds = 40 if quick else 200
    rows = []
    previous = lockwise.configure(on_lock_order="ignore", on_deadlock="raise")
    try:
        for label, Lock, _RLock in implementations():
            samples = [x for x in (_one_deadlock(Lock) for _ in range(rounds))
                       if x is not None]
            samples.sort()
            p50 = statistics.median(samples)
            p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
            rows.append({"name": f"detection latency p50, ABBA via Barrier [{label}]",
                         "baseline": None, "lockwise": p50, "ratio": None,
                         "note": f"{len(samples)} deadlocks; threading would hang"})
            rows.append({"name": f"detection latency p99, ABBA via Barrier [{label}]",
                         "baseline": None, "lockwise": p99, "ratio": None,
                         "target": "< 10 ms", "met": p99 < 0.010,
                         "why": "the second waiter detects the cycle when it blocks"})
    finally:
        lockwise.configure(**previous)
        lockwise.reset()
    return rows


def _scale(quick: bool) -> list[dict[str, Any]]:
    n, rounds = (20_000, 7) if quick else (100_000, 15)
    sizes = (10, 1_000, 10_000) if quick else (10, 1_000, 100_000)
    rows = []
    for label, Lock, _RLock in implementations():
        first = None
        for size in sizes:
            keep = [Lock() for _ in range(size)]
            tkeep = [threading.Lock() for _ in range(size)]
            base, lw, ratio = compare(acq_rel(tkeep[size // 2]), acq_rel(keep[size // 2]),
                                      n, rounds)
            if first is None:
                first = ratio
            growth = ratio / first
            entry = row(f"acquire+release with {size:,} live locks [{label}]", base, lw,
                        ratio, note=f"ratio vs {sizes[0]} live locks: {growth:.2f}x")
            if size != sizes[0]:
                entry.update(target="within 25% of the cost with 10", met=growth <= 1.25,
                             why="cost grew with the number of live locks")
            rows.append(entry)
            del keep, tkeep
    return rows


def _order_edges(quick: bool) -> list[dict[str, Any]]:
    classes = 2_000 if quick else 10_000
    trials = 50 if quick else 200
    rows = []
    previous = lockwise.configure(on_lock_order="ignore")
    try:
        for label, Lock, _RLock in implementations():
            lockwise.reset()
            locks = [Lock(name=f"bench.class.{label}.{i}") for i in range(classes)]
            for x, y in zip(locks, locks[1:]):  # a chain: every new edge searches far
                with x, y:
                    pass
            rng = random.Random(5)
            pairs = set()
            while len(pairs) < trials:
                i = rng.randrange(0, classes // 2)
                j = rng.randrange(i + 2, classes)
                pairs.add((i, j))
            tlocks = [threading.Lock(), threading.Lock()]
            t0 = now()
            for i, j in pairs:
                with locks[i], locks[j]:
                    pass
            lw = (now() - t0) / trials
            t0 = now()
            for _ in pairs:
                with tlocks[0], tlocks[1]:
                    pass
            base = (now() - t0) / trials
            rows.append(row(f"new order edge, graph of {classes:,} lock classes [{label}]",
                            base, lw, lw / base,
                            note="one-time cost per new (held, new) pair: records the edge "
                                 "and searches the graph for a cycle"))
            del locks
    finally:
        lockwise.configure(**previous)
        lockwise.reset()
    return rows


def _memory(quick: bool) -> list[dict[str, Any]]:
    live = 10_000
    dropped = 100_000 if quick else 1_000_000
    rows = []

    def per_lock(make: Callable[[], Any]) -> float:
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            keep = [None] * live
            mid = tracemalloc.get_traced_memory()[0]
            for i in range(live):
                keep[i] = make()
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        del keep, before
        return (after - mid) / live

    base = per_lock(threading.Lock)
    for label, Lock, _RLock in implementations():
        for kind, make in (("Lock", Lock), ("RLock", _RLock)):
            lw = per_lock(make)
            rows.append({"name": f"memory per live {kind} [{label}]", "baseline": base,
                         "lockwise": lw, "ratio": lw / base, "unit": "bytes",
                         "target": "<= 200 bytes", "met": lw <= 200,
                         "note": "tracemalloc, including the inner lock ([c]: lockwise's "
                                 "InnerLock and its PyThread lock, a 32-byte raw allocation "
                                 "plus 16 bytes of glibc malloc header not counted here); "
                                 "baseline is threading.Lock",
                         "why": "object with its fields, GC header and inner lock"})

    for label, Lock, _RLock in implementations():
        gc.collect()
        tracemalloc.start()
        try:
            warm = [Lock() for _ in range(1000)]
            for lock in warm:
                with lock:
                    pass
            del warm
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            batch = 10_000
            for _ in range(dropped // batch):
                locks = [Lock() for _ in range(batch)]
                for lock in locks:
                    with lock:
                        pass
                del locks
            gc.collect()
            growth = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        rows.append({"name": f"memory growth after {dropped:,} locks created, used, dropped "
                             f"[{label}]", "baseline": 0, "lockwise": growth, "ratio": None,
                     "unit": "bytes", "target": "no growth (< 64 KiB)",
                     "met": growth < 65536, "why": "something keeps dropped locks alive"})
    return rows


def run(quick: bool) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for part in (_uncontended, _nesting, _contention, _parallel, _condition, _latency, _scale,
                 _order_edges, _memory):
        print(f"   {part.__name__.strip('_')}...", file=sys.stderr, flush=True)
        try:
            rows.extend(part(quick))
        except Exception as exc:  # one part failing must not hide the others
            rows.append({"name": f"{part.__name__.strip('_')}: error", "baseline": None,
                         "lockwise": None, "ratio": None, "error": True,
                         "note": f"benchmark failed: {type(exc).__name__}: {exc}"})
    return rows
