"""lockwise's own threads stay out of the program's way: a program that joins
every thread in ``threading.enumerate()`` finishes as under plain Python (no
lockwise thread to wait for forever, no DeadlockError), and a join of a
lockwise thread is never a stall. Real subprocesses, each time-bounded."""

from __future__ import annotations

from pathlib import Path

import pytest

from .runner_helpers import lockwise as run_lockwise
from .runner_helpers import python

pytestmark = pytest.mark.timeout(60)

JOIN_ALL = """
import threading, time, logging
logging.basicConfig()
lock = threading.Lock()
a, b = threading.Lock(), threading.Lock()
def work():
    with lock:
        time.sleep(0.05)
def inverted():
    with b:
        with a:
            pass
with a:
    with b:
        pass
threads = [threading.Thread(target=work) for _ in range(3)] + [threading.Thread(target=inverted)]
for t in threads:
    t.start()
time.sleep(0.5)  # a finding has been reported (by lockwise's reporter thread)
for t in threading.enumerate():
    if t is not threading.current_thread() and not isinstance(t, threading._DummyThread):
        print("joining", t.name, flush=True)
        t.join()
print("done", flush=True)
"""


def test_joining_every_thread_finishes_under_lockwise_run(tmp_path: Path) -> None:
    prog = tmp_path / "join_all.py"
    prog.write_text(JOIN_ALL)
    result = run_lockwise("run", "--hang-timeout", "0.2", "--json", str(tmp_path / "r.json"),
                          str(prog), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "done", result.stdout
    assert "lockwise" not in result.stdout  # no lockwise thread among the program's
    assert "potential deadlock" in result.stderr  # the reporter did run
    assert "DeadlockError" not in result.stderr


JOIN_INTERNAL = """
import threading, time, lockwise
from lockwise import _state
started = threading.Event()
def internal():
    _state.internal_threads.add(threading.get_ident())
    started.set()
    time.sleep(1.5)  # runs: lockwise skips its own threads in the stall scan
    _state.internal_threads.discard(threading.get_ident())
helper = threading.Thread(target=internal)
helper.start()
started.wait(10)
helper.join()
print("joined", flush=True)
"""


def test_a_join_of_a_lockwise_thread_is_not_a_stall(tmp_path: Path) -> None:
    # Should a lockwise thread ever be a threading.Thread the program can
    # join, the join waits for a running thread: never "every thread is blocked".
    prog = tmp_path / "join_internal.py"
    prog.write_text(JOIN_INTERNAL)
    result = python(str(prog), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "joined\n"
