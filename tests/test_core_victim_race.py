"""Core fix: a thread that raises DeadlockError must stop counting as blocked first.

Otherwise, while it records the finding (listeners write files, print...), the
other threads' "everybody is blocked" rule sees it still registered and reports
the same freeze a second time.
"""

from __future__ import annotations

import threading

import lockwise
from lockwise import _findings


def test_one_deadlock_finding_even_with_slow_listener() -> None:
    lockwise.reset()
    pause = threading.Event()

    def slow_listener(finding: lockwise.Finding) -> None:
        pause.wait(0.3)  # a listener writing a report: long enough for a stall check

    _findings.add_listener(slow_listener)
    try:
        a, b = lockwise.Lock(), lockwise.Lock()
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def worker(first: lockwise.Lock, second: lockwise.Lock) -> None:
            try:
                with first:
                    barrier.wait(timeout=10)
                    with second:
                        pass
            except lockwise.DeadlockError as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(a, b)),
                   threading.Thread(target=worker, args=(b, a))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()  # untimed: the main thread counts as blocked too
        assert len(errors) == 1
        assert len(lockwise.findings("deadlock")) == 1, [
            f.summary for f in lockwise.findings("deadlock")]
    finally:
        _findings.remove_listener(slow_listener)
        lockwise.reset()
