"""The watchdog reports threads blocked too long, once per stuck wait."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import pytest

import lockwise
from lockwise import _state, _watchdog

from .runner_helpers import clean_env


def _poll_until(wd: _watchdog.Watchdog, deadline: float = 10.0) -> Optional[lockwise.Finding]:
    end = time.monotonic() + deadline
    tick = threading.Event()
    while time.monotonic() < end:
        found = wd.poll()
        if found is not None:
            return found
        tick.wait(0.02)
    return None


@pytest.fixture(autouse=True)
def _reset() -> None:
    lockwise.reset()


def test_hang_reported_once_with_table_and_user_stacks() -> None:
    guard = lockwise.Lock()
    never = lockwise.Event()
    holding = threading.Event()

    def stuck() -> None:
        with guard:
            holding.set()
            never.wait()

    t = threading.Thread(target=stuck, name="stuck-worker")
    t.start()
    try:
        assert holding.wait(10)
        wd = _watchdog.Watchdog(0.05)
        found = _poll_until(wd)
        assert found is not None
        assert found.kind == "hang"
        assert found.threads == ["stuck-worker"]
        rows = {row["lock"]["name"]: row for row in found.details["table"]}
        assert rows["guard"]["owner"] == "stuck-worker"
        assert any(name.endswith("(notify)") and row["waiters"] == ["stuck-worker"]
                   for name, row in rows.items())
        stack = next(s for s in found.stacks if s.thread == "stuck-worker")
        assert stack.frames and stack.frames[-1].function == "stuck"
        assert all("lockwise" not in f.filename.split("tests")[0] or "tests" in f.filename
                   for f in stack.frames)
        assert "Locks:" in found.text and "stuck-worker" in found.text
        assert wd.poll() is None  # once per stuck wait
        assert lockwise.findings("hang") == [found]
    finally:
        never.set()
        t.join(10)
    assert not t.is_alive()


def test_timed_waits_are_not_hangs() -> None:
    ev = lockwise.Event()
    started = threading.Event()

    def timed() -> None:
        started.set()
        ev.wait(30)

    t = threading.Thread(target=timed)
    t.start()
    try:
        assert started.wait(10)
        wd = _watchdog.Watchdog(0.01)
        deadline = threading.Event()
        deadline.wait(0.1)
        assert wd.poll() is None
    finally:
        ev.set()
        t.join(10)


def test_watchdog_thread_is_internal_and_stops() -> None:
    wd = lockwise.watchdog(5.0)
    try:
        assert wd is not None and wd.running
        ident = wd._ident
        assert ident is not None
        # Not in threading.enumerate(): a program joining every thread there
        # must not join one that never ends (and that plain Python lacks).
        assert ident not in {t.ident for t in threading.enumerate()}
        end = time.monotonic() + 10
        while ident not in _state.internal_threads and time.monotonic() < end:
            threading.Event().wait(0.01)
        assert ident in _state.internal_threads
    finally:
        assert lockwise.watchdog(None) is None
    assert not wd.running
    assert ident not in _state.internal_threads


def test_background_watchdog_records_hang() -> None:
    never = lockwise.Event()
    started = threading.Event()

    def waiter() -> None:
        started.set()
        never.wait()

    t = threading.Thread(target=waiter, name="bg-waiter")
    with _watchdog.Watchdog(0.05, interval=0.02), lockwise.installed():
        t.start()
        assert started.wait(10)
        end = time.monotonic() + 10
        while not lockwise.findings("hang") and time.monotonic() < end:
            # a timed join of the stuck thread: main only waits for it (were
            # main running otherwise, it could set ``never``: not a hang)
            t.join(0.02)
    never.set()
    t.join(10)
    [hang] = lockwise.findings("hang")
    assert hang.threads == ["bg-waiter"]


@pytest.mark.parametrize("bad", [0, -1, "soon", float("inf"), None])
def test_bad_timeout(bad: object) -> None:
    with pytest.raises(ValueError, match="positive number of seconds"):
        _watchdog.Watchdog(bad)  # type: ignore[arg-type]


def test_hang_of_a_thread_reusing_a_reported_ident_is_reported() -> None:
    # issue 19, 4: hangs were keyed by (ident, changes); a new thread that gets
    # a reported thread's ident starts with the same changes count
    wd = _watchdog.Watchdog(0.05)
    seen: dict[int, int] = {}
    found = []
    for attempt in range(20):
        never = lockwise.Event()
        started = threading.Event()

        def waiter(started: threading.Event = started, never: lockwise.Event = never) -> None:
            started.set()
            never.wait()

        t = threading.Thread(target=waiter, name=f"reuser-{attempt}")
        t.start()
        assert started.wait(10)
        hang = _poll_until(wd)
        never.set()
        t.join(10)
        assert hang is not None, f"attempt {attempt}: a hang of a new thread was missed"
        found.append(hang)
        assert t.ident is not None
        seen[t.ident] = seen.get(t.ident, 0) + 1
        if seen[t.ident] >= 2:
            break
    else:
        pytest.skip("no thread ident was reused in 20 threads")
    assert len(lockwise.findings("hang")) == len(found)


def test_join_of_a_running_thread_is_not_a_hang() -> None:
    # issue 19, 4: a join() on a CPU-busy thread was reported as a hang
    stop = threading.Event()
    busy_started = threading.Event()
    result: list[object] = []

    def busy() -> None:
        busy_started.set()
        n = 0
        while not stop.is_set():
            n += 1

    def joiner(target: threading.Thread) -> None:
        target.join()
        result.append("joined")

    b = threading.Thread(target=busy, name="busy")
    b.start()
    assert busy_started.wait(10)
    j = threading.Thread(target=joiner, args=(b,), name="joiner")
    wd = _watchdog.Watchdog(0.05)
    with lockwise.installed():
        j.start()
        deadline = threading.Event()
        deadline.wait(0.3)
        try:
            assert wd.poll() is None
        finally:
            stop.set()
            j.join(10)
            b.join(10)
    assert result == ["joined"] and lockwise.findings("hang") == []


def test_lock_wait_on_a_running_owner_is_not_a_hang_but_on_a_stuck_one_is() -> None:
    guard = lockwise.Lock(name="guard")
    never = lockwise.Event()
    stop = threading.Event()
    holding = threading.Event()
    mode: list[str] = ["busy"]

    def owner() -> None:
        with guard:
            holding.set()
            while not stop.is_set():
                if mode[0] == "stuck":
                    never.wait()
        # released here

    def waiter() -> None:
        with guard:
            pass

    o = threading.Thread(target=owner, name="owner")
    o.start()
    assert holding.wait(10)
    w = threading.Thread(target=waiter, name="lock-waiter")
    w.start()
    try:
        wd = _watchdog.Watchdog(0.05)
        threading.Event().wait(0.3)
        assert wd.poll() is None  # the owner computes: contention, not a hang
        mode[0] = "stuck"
        found = _poll_until(wd)
        assert found is not None and "lock-waiter" in found.threads
    finally:
        stop.set()
        never.set()
        o.join(10)
        w.join(10)


def test_idle_consumer_while_the_producer_runs_is_not_a_hang() -> None:
    # issue 19, 4: an idle consumer on queue.get() by design was a "hang"
    import queue

    with lockwise.installed():
        jobs: queue.Queue[int] = queue.Queue()
        stop = threading.Event()
        got: list[int] = []

        def consumer() -> None:
            while True:
                item = jobs.get()
                if item < 0:
                    return
                got.append(item)

        def producer() -> None:
            for i in range(3):
                stop.wait(0.15)  # between jobs: a plain (C-level) wait
                jobs.put(i)
            jobs.put(-1)

        threads = [threading.Thread(target=consumer, name="consumer"),
                   threading.Thread(target=producer, name="producer")]
        wd = _watchdog.Watchdog(0.05, interval=0.02)
        with wd:
            for t in threads:
                t.start()
            for t in threads:
                t.join(10)
    lockwise.watchdog(None)
    assert got == [0, 1, 2]
    assert lockwise.findings("hang") == []


RECURRING = """
import queue, signal
q = queue.Queue()

def tick(signum, frame):
    q.put_nowait(1)

signal.signal(signal.SIGALRM, tick)
signal.setitimer(signal.ITIMER_REAL, 0.6, 0.6)
for _ in range(6):
    q.get()  # each gap is a wait that nothing lockwise sees can end
signal.setitimer(signal.ITIMER_REAL, 0)
print("done")
"""


@pytest.mark.timeout(120)
def test_a_recurring_wait_is_reported_once_with_a_count(tmp_path: Path) -> None:
    program = tmp_path / "recurring.py"
    program.write_text(RECURRING, encoding="utf-8")
    report = tmp_path / "r.json"
    result = subprocess.run([sys.executable, "-m", "lockwise", "run", "--hang-timeout", "0.3",
                             "--json", str(report), str(program)], capture_output=True,
                            text=True, timeout=90, cwd=tmp_path, env=clean_env())
    assert result.returncode == 0 and "done" in result.stdout, result.stderr
    assert result.stderr.count("lockwise: hang:") == 1, result.stderr  # in full once
    summary = [line for line in result.stderr.splitlines() if line.startswith("  - [hang]")]
    assert len(summary) == 1, result.stderr  # one line, with the count
    seen = int(summary[0].rsplit("(seen ", 1)[1].split()[0])
    assert seen >= 3, summary


WATCHDOG_FORK = """
import os, time, lockwise
wd = lockwise.watchdog(5.0)
assert wd.running
pid = os.fork()
if pid == 0:
    start = time.monotonic()
    ok = not wd.running                     # the child has no watchdog thread
    ok = ok and lockwise.watchdog(None) is None
    ok = ok and time.monotonic() - start < 1.0  # stopping joins nothing
    new = lockwise.watchdog(5.0)             # and it can start its own
    ok = ok and new is not None and new.running
    lockwise.watchdog(None)
    os._exit(0 if ok else 1)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
assert wd.running
lockwise.watchdog(None)
assert not wd.running
print("ok")
"""


@pytest.mark.timeout(60)
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_watchdog_across_fork() -> None:
    # A raw thread: its "done" lock is copied held into the child, where no
    # thread will ever release it; the child must neither wait for it nor
    # believe a watchdog runs.
    result = subprocess.run([sys.executable, "-W", "ignore", "-c", WATCHDOG_FORK],
                            capture_output=True, text=True, timeout=40, env=clean_env())
    assert result.returncode == 0 and result.stdout == "ok\n", result.stderr
