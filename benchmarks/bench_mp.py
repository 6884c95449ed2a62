"""multiprocessing's Lock and RLock under lockwise (``lockwise._mp``) against
multiprocessing's own, uncontended, in one process.

The C rows use the accelerator's ``SemInner``; the pure rows run the same
measurement in a subprocess with ``LOCKWISE_PURE=1``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from typing import Any

from _common import acq_rel, compare, row, with_lock

WHY_PURE = ("pure Python: the raw lock under lockwise's Lock is a Python object here, "
            "so each acquire and release adds Python calls to a semaphore that costs "
            "about as much as one")
WHY_C = ("lockwise's Lock bookkeeping (owner, held list, acquisition site) costs about as much "
         "as the raw semaphore, which multiprocessing calls with no wrapper at all: see the "
         "reference row (lockwise.Lock alone); the semaphore and the slot add little to it")


def measure(quick: bool) -> list[dict[str, Any]]:
    """The rows for the implementation this process uses."""
    import lockwise
    from lockwise import _mp, _primitives

    label = _primitives.IMPLEMENTATION
    n, rounds = (20_000, 7) if quick else (200_000, 15)
    ctx = multiprocessing.get_context("fork")
    plain_lock, plain_rlock = ctx.Lock(), ctx.RLock()
    plain_sem = ctx.BoundedSemaphore(2)
    with lockwise.installed():
        lock, rlock = ctx.Lock(), ctx.RLock()
        sem = ctx.BoundedSemaphore(2)
    assert isinstance(lock, _mp.MPLock) and isinstance(rlock, _mp.MPRLock)
    why = WHY_C if label == "c" else WHY_PURE
    own = _primitives.Lock()
    rows = []
    if isinstance(sem, _mp.MPBoundedSemaphore):  # C only: see docs/multiprocessing.md
        rows = [
            row(f"multiprocessing.BoundedSemaphore acquire()+release() [{label}]",
                *compare(acq_rel(plain_sem), acq_rel(sem), n, rounds),
                note="no target (the issue's is for Lock): a Python acquire and release "
                     "around the semaphore's, and a compare-and-swap of the taker's entry "
                     "in shared memory; multiprocessing's pair is two C calls"),
            row(f"multiprocessing.BoundedSemaphore `with` [{label}]",
                *compare(with_lock(plain_sem), with_lock(sem), n, rounds),
                note="no target; multiprocessing's __enter__ and __exit__ are Python methods"),
        ]
    return rows + [
        row(f"reference: lockwise.Lock vs multiprocessing.Lock, acquire()+release() [{label}]",
            *compare(acq_rel(plain_lock), acq_rel(own), n, rounds),
            note="lockwise's own Lock (on a thread lock) in the same loop: the bookkeeping "
                 "every lockwise lock pays, whatever its raw lock"),
        row(f"multiprocessing.Lock acquire()+release() [{label}]",
            *compare(acq_rel(plain_lock), acq_rel(lock), n, rounds), target=1.5, why=why),
        row(f"multiprocessing.Lock `with` [{label}]",
            *compare(with_lock(plain_lock), with_lock(lock), n, rounds), target=1.5, why=why),
        row(f"multiprocessing.RLock acquire()+release() [{label}]",
            *compare(acq_rel(plain_rlock), acq_rel(rlock), n, rounds), target=1.5, why=why),
        row(f"multiprocessing.RLock `with` [{label}]",
            *compare(with_lock(plain_rlock), with_lock(rlock), n, rounds), target=1.5, why=why),
    ]


def run(quick: bool) -> list[dict[str, Any]]:
    rows = measure(quick)
    from lockwise import _primitives

    if _primitives.IMPLEMENTATION == "c":
        env = dict(os.environ, LOCKWISE_PURE="1")
        here = os.path.dirname(os.path.abspath(__file__))
        code = (f"import sys, json; sys.path.insert(0, {here!r}); import bench_mp; "
                f"print(json.dumps(bench_mp.measure({quick!r})))")
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, timeout=600, check=True)
        rows.extend(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows
