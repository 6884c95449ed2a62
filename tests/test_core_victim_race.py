"""Core fix: a thread that raises DeadlockError must stop counting as blocked first.

Otherwise, while it records the finding (listeners write files, print...), the
other threads' "everybody is blocked" rule sees it still registered and reports
the same freeze a second time.
"""

from __future__ import annotations

import threading
import time
from typing import Any

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


def test_a_cycle_read_before_its_victim_left_is_not_raised_again(monkeypatch: Any) -> None:
    """Free-threaded race, made deterministic: the first waiter of an AB/BA
    reads the cycle; the closer raises, releases its lock and exits; only then
    does the first waiter decide who closed the cycle. The closer is no longer
    a candidate, so the first waiter picked itself and, the closer's thread
    being dead, passed the "still waiting" guard: DeadlockError in both
    threads, the second one false (its lock was free by then). Seen on 3.13t
    in the 1,000-round AB/BA test. The verdict must come from the formation
    as it was read: a participant whose ``changes`` moved has left."""
    from lockwise import _waitfor

    lockwise.reset()
    real_closer = _waitfor._closer
    first_read = threading.Event()
    closer_state: list[Any] = []
    names: dict[int, str] = {}

    def closer(me: Any, cycle: list[Any]) -> Any:
        name = names.get(threading.get_ident())
        if name == "T2":  # the closer: wait until T1 has read the cycle too
            closer_state.append(me)
            first_read.wait(10)
        elif name == "T1" and not first_read.is_set():
            first_read.set()  # T1 read the whole cycle; now let T2 raise and exit
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not (closer_state
                                                       and not closer_state[0].alive):
                time.sleep(0.001)
        return real_closer(me, cycle)

    monkeypatch.setattr(_waitfor, "_closer", closer)
    a, b = lockwise.Lock(), lockwise.Lock()
    t2_holds_b = threading.Event()
    raised: list[str] = []

    def t1() -> None:
        names[threading.get_ident()] = "T1"
        with a:
            assert t2_holds_b.wait(10)
            try:
                with b:
                    pass
            except lockwise.DeadlockError:
                raised.append("T1")

    def t2() -> None:
        names[threading.get_ident()] = "T2"
        with b:
            t2_holds_b.set()
            deadline = time.monotonic() + 10
            while not b.waiters and time.monotonic() < deadline:  # T1 is registered
                time.sleep(0.001)
            try:
                with a:
                    pass
            except lockwise.DeadlockError:
                raised.append("T2")

    threads = [threading.Thread(target=t1, daemon=True), threading.Thread(target=t2, daemon=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not any(t.is_alive() for t in threads)
    assert first_read.is_set(), "T1 never read the cycle: the race was not staged"
    assert raised == ["T2"], raised
