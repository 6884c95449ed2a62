"""Every lock knows its owner, count, waiters, name, creation and acquisition sites (issue 2)."""

from __future__ import annotations

import gc
import re
import threading
import weakref

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lockwise
from lockwise import _sites

from .conftest import Runner


class Bank:
    def __init__(self) -> None:
        self.ledger_lock = lockwise.RLock()


def test_name_site_and_repr_of_an_rlock(runner: Runner) -> None:
    bank = Bank()
    lock = bank.ledger_lock
    assert lock.name == "Bank.ledger_lock"
    assert lock.site == f"{__file__}:{Bank.__init__.__code__.co_firstlineno + 1}"
    pattern = r"<unlocked lockwise\.RLock object at 0x[0-9a-f]+ 'Bank\.ledger_lock' \("
    assert re.match(pattern, repr(lock))
    lock.acquire()
    lock.acquire()
    line = lock.acquired_at
    assert line is not None and line.endswith(f"test_introspection.py:{_lineno() - 3}")
    release = threading.Event()
    waiting = threading.Event()

    def contender() -> None:
        waiting.set()
        with lock:
            pass

    runner.start(contender, "Contender")
    waiting.wait(5)
    for _ in range(500):
        if lock.waiters:
            break
        threading.Event().wait(0.01)
    text = repr(lock)
    assert "<locked lockwise.RLock object at" in text
    assert f"owner=MainThread (ident {threading.get_ident()})" in text
    assert "count=2" in text and "1 waiting" in text
    assert lock.owner is threading.main_thread() and lock.count == 2
    assert [threading._active[i].name for i in lock.waiters] == ["Contender"]  # type: ignore[attr-defined]
    lock.release()
    lock.release()
    release.set()
    runner.join()
    assert lock.owner is None and lock.acquired_at is None and not lock.locked()


def _lineno() -> int:
    import sys

    return sys._getframe(1).f_lineno


def test_held_locks_in_acquisition_order_for_any_thread(runner: Runner) -> None:
    a, b, c = lockwise.Lock(name="a"), lockwise.RLock(name="b"), lockwise.Lock(name="c")
    holding = threading.Event()
    finish = threading.Event()

    def holder() -> None:
        with c, b, b:
            holding.set()
            finish.wait(5)

    thread = runner.start(holder, "Holder")
    holding.wait(5)
    with a:
        assert lockwise.held_locks() == [a]
        assert lockwise.held_locks(thread) == [c, b]
        assert lockwise.held_locks(thread.ident) == [c, b]
    finish.set()
    runner.join()
    assert lockwise.held_locks(thread) == []


def test_released_by_another_thread_leaves_no_stale_record(runner: Runner) -> None:
    lock = lockwise.Lock()
    lock.acquire()
    runner.start(lock.release, "Other")
    runner.join()
    assert lockwise.held_locks() == [] and lock.owner is None


def test_snapshot_is_consistent_and_does_not_keep_locks_alive(runner: Runner) -> None:
    held = lockwise.Lock(name="held-one")
    idle = lockwise.Lock(name="idle-one")
    holding = threading.Event()
    finish = threading.Event()

    def holder() -> None:
        with held:
            holding.set()
            finish.wait(5)

    def waiter() -> None:
        with held:
            pass

    runner.start(holder, "Holder")
    holding.wait(5)
    runner.start(waiter, "Waiter")
    for _ in range(500):
        if held.waiters:
            break
        threading.Event().wait(0.01)
    snap = lockwise.snapshot()
    by_name = {lock.name: lock for lock in snap.locks}
    assert by_name["held-one"].owner == "Holder" and by_name["held-one"].waiters == ["Waiter"]
    assert by_name["idle-one"].locked is False and by_name["idle-one"].owner is None
    threads = {t.name: t for t in snap.threads}
    assert threads["Holder"].holds == ["held-one"] and threads["Waiter"].waiting_for == "held-one"
    assert "held-one" in str(snap) and snap.to_dict()["locks"]
    finish.set()
    runner.join()
    ref = weakref.ref(idle)
    del idle, by_name, snap
    gc.collect()
    assert ref() is None


def test_misuse_raises_what_threading_raises() -> None:
    import pytest

    for factory in (lockwise.Lock, threading.Lock):
        lock = factory()
        with pytest.raises(RuntimeError):
            lock.release()
        with pytest.raises(ValueError):
            lock.acquire(False, 1)
        with pytest.raises(ValueError):
            lock.acquire(timeout=-5)
    for factory in (lockwise.RLock, threading.RLock):
        rlock = factory()
        with pytest.raises(RuntimeError):
            rlock.release()
    with pytest.raises(ValueError):
        lockwise.Semaphore(-1)
    sem = lockwise.BoundedSemaphore(1)
    with pytest.raises(ValueError):
        sem.release()


# What _sites._assigned_name replaced: the target of an assignment at the start
# of a line (the name guessed for a lock created on that line).
_ASSIGNMENT = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(?::[^=]*)?=(?!=)")


@pytest.mark.parametrize("line, name", [
    ("    self.lock = threading.Lock()\n", "self.lock"),
    ("lock=Lock()", "lock"),
    ("x: threading.Lock = threading.Lock()", "x"),
    ("a.b.c  =  RLock()", "a.b.c"),
    ("if a == Lock():", ""),
    ("x == y", ""),
    ("x += 1", ""),
    ("return Lock()", ""),
    ("1x = 2", ""),
    ("", ""),
    ("x: int", ""),
])
def test_assigned_name(line: str, name: str) -> None:
    assert _sites._assigned_name(line) == name


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=" \tabxy_.:=+1()[],\n", max_size=30))
def test_assigned_name_agrees_with_the_regular_expression(line: str) -> None:
    match = _ASSIGNMENT.match(line)
    assert _sites._assigned_name(line) == (match.group(1) if match else "")
