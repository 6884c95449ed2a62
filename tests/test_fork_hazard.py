"""The fork-safety audit: a lockwise lock held by another thread at os.fork()
is a ``fork-hazard`` finding, and the child's wait on it a deadlock linked to it.

Every test forks for real; children leave with ``os._exit`` and are reaped
with a deadline, helper threads are joined with timeouts.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

import pytest

import lockwise
from lockwise import DeadlockError, _fork, _validate

from .conftest import Runner
from .runner_helpers import lockwise as run_lockwise

pytestmark = [pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork"),
              pytest.mark.timeout(60)]


def _reap(pid: int, timeout: float = 20) -> int:
    """The exit code of child ``pid``, killing it if it is not done in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    raise AssertionError("the forked child did not finish")


def fork() -> int:
    with warnings.catch_warnings():  # "fork() with threads" (3.12+): that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        return os.fork()


def test_lock_held_by_another_thread_at_fork(runner: Runner) -> None:
    app_lock = lockwise.RLock()
    holding, finish = threading.Event(), threading.Event()

    def holder() -> None:
        with app_lock:
            holding.set()
            finish.wait(10)

    runner.start(holder, "Holder")
    assert holding.wait(5)
    read, write = os.pipe()
    pid = fork()
    if pid == 0:  # the child: Holder does not exist here
        code = 1
        try:
            os.close(read)
            try:
                app_lock.acquire()
            except DeadlockError as exc:
                link = exc.finding.details.get("fork_hazard") or {}
                os.write(write, json.dumps(link).encode())
                code = 0
        finally:
            os._exit(code)
    os.close(write)
    try:
        assert _reap(pid) == 0
        with os.fdopen(read) as pipe:
            link = json.loads(pipe.read())
    finally:
        finish.set()
        runner.join()
    [hazard] = lockwise.findings("fork-hazard")
    details = hazard.details
    assert details["owner"] == "Holder"
    assert details["lock"]["name"] == "app_lock"
    assert details["acquired_at"].endswith(f"in {holder.__name__}")
    assert "test_fork_hazard.py" in details["acquired_at"]
    assert details["reset_in_child"] is False
    assert details["id"] == f"fork-hazard:{os.getpid()}:{_fork._serial}:0"
    assert hazard.stacks[0].frames[-1].line.startswith("return os.fork()")
    assert "spawn" in str(hazard) and "register_at_fork" in str(hazard)
    # The child's deadlock names the parent's finding.
    assert link["id"] == details["id"]
    assert link["parent_pid"] == os.getpid()
    assert link["owner"] == "Holder"
    _validate.check({"findings": [hazard.to_dict()]})


def test_locks_of_the_forking_thread_and_free_locks_are_no_hazard(runner: Runner) -> None:
    mine, free = lockwise.Lock(), lockwise.Lock()
    with free:
        pass
    with mine:
        pid = fork()
        if pid == 0:
            os._exit(0 if lockwise.held_locks() == [mine] else 1)
    assert _reap(pid) == 0
    assert lockwise.findings("fork-hazard") == []


def test_before_fork_hook_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    # A broken state table: the hook reports an internal error, fork() works.
    class Broken:
        def values(self) -> list[object]:
            raise RuntimeError("boom")

    monkeypatch.setattr(_fork, "states", Broken())
    pid = fork()
    if pid == 0:
        os._exit(0)
    assert _reap(pid) == 0
    assert lockwise.flush(5)
    assert any("before-fork hook" in e for e in lockwise._findings.internal_errors())


PROGRAM = textwrap.dedent("""
    import logging, os, sys, threading, time, warnings
    warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads, 3.12+

    class OldHandler(logging.StreamHandler):
        def createLock(self):  # as older handlers do: not reset in a forked child
            self.lock = threading.RLock()

    log = logging.getLogger("app")
    log.setLevel(logging.INFO)
    log.propagate = False
    handler = {handler}(sys.stdout)
    log.addHandler(handler)
    holding = threading.Event()
    finished = False

    def writer():
        # Polls a flag rather than waiting on an Event: an Event.wait() takes
        # the Event's lock for a moment, and a fork in that moment would be a
        # second (real) hazard, which would make the findings racy.
        deadline = time.monotonic() + 10
        with handler.lock:
            holding.set()
            while not finished and time.monotonic() < deadline:
                time.sleep(0.005)

    t = threading.Thread(target=writer, name="Writer")
    t.start()
    holding.wait(10)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            log.info("child logs")
            code = 0
        except Exception as exc:
            print("child:", type(exc).__name__, flush=True)
            code = 0
        finally:
            os._exit(code)
    finished = True
    t.join(10)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.01)
    else:
        os.kill(pid, 9)
    print("child exit", os.waitstatus_to_exitcode(status), flush=True)
""")


def _run(tmp_path: Path, handler: str, *options: str) -> tuple[object, list[dict[str, object]]]:
    (tmp_path / "forky.py").write_text(PROGRAM.format(handler=handler))
    out = tmp_path / "r.json"
    result = run_lockwise("run", "--json", str(out), *options, "forky.py", cwd=tmp_path,
                          timeout=50)
    data = json.loads(out.read_text())
    _validate.check(data)
    return result, data["findings"]


def test_logging_handler_lock_not_reset_in_child_is_a_linked_deadlock(tmp_path: Path) -> None:
    result, found = _run(tmp_path, "OldHandler", "--fail-on", "fork-hazard")
    assert result.returncode == 3, result.stderr  # type: ignore[attr-defined]
    out = result.stdout  # type: ignore[attr-defined]
    assert "child: DeadlockError" in out and "child exit 0" in out
    [hazard] = [f for f in found if f["kind"] == "fork-hazard"]
    [deadlock] = [f for f in found if f["kind"] == "deadlock"]
    details = hazard["details"]
    assert isinstance(details, dict)
    assert details["owner"] == "Writer" and details["lock"]["name"] == "OldHandler.lock"
    assert details["reset_in_child"] is False
    assert "forky.py:22 in writer" in details["acquired_at"]
    assert hazard["stacks"][0]["frames"][-1]["code"] == "pid = os.fork()"  # type: ignore[index]
    link = deadlock["details"]["fork_hazard"]  # type: ignore[index]
    assert link["id"] == details["id"] and deadlock["pid"] != hazard["pid"]
    assert "was held by Writer of the parent process when it forked" in str(deadlock["summary"])
    err = result.stderr  # type: ignore[attr-defined]
    assert "lockwise: fork hazard: MainThread forked while Writer held OldHandler.lock" in err
    assert "1 deadlock, 1 fork-hazard" in err, err
    # The full text report and the HTML page show both, linked.
    report = run_lockwise("report", str(tmp_path / "r.json"), cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert "Forked while held: OldHandler.lock" in report.stdout
    assert f"finding {details['id']}" in report.stdout
    assert "Fix: acquire the lock around the fork" in report.stdout
    html = tmp_path / "r.html"
    report = run_lockwise("report", "--html", str(html), str(tmp_path / "r.json"), cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    page = html.read_text()
    assert "kind-fork-hazard" in page and page.count(str(details["id"])) >= 2


def test_logging_handler_lock_reset_in_child(tmp_path: Path) -> None:
    # logging resets its handlers' locks in a forked child: a hazard (what the
    # lock guards may be half-written), said so, and no deadlock in the child.
    result, found = _run(tmp_path, "logging.StreamHandler")
    assert result.returncode == 0, result.stderr  # type: ignore[attr-defined]
    assert "child logs" in result.stdout and "child exit 0" in result.stdout  # type: ignore
    assert [f["kind"] for f in found] == ["fork-hazard"]
    assert found[0]["details"]["reset_in_child"] is True  # type: ignore[index]
    assert "logging resets this lock in the child" in result.stderr  # type: ignore


def test_fail_on_accepts_fork_hazard() -> None:
    from lockwise._runner import parse_kinds

    assert "fork-hazard" in parse_kinds("deadlock,fork-hazard")
    assert "fork-hazard" in parse_kinds("all")


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_multiprocessing_fork_start_method_is_audited(runner: Runner) -> None:
    import multiprocessing

    app_lock = lockwise.RLock()
    holding, finish = threading.Event(), threading.Event()

    def holder() -> None:
        with app_lock:
            holding.set()
            finish.wait(10)

    runner.start(holder, "Holder")
    assert holding.wait(5)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            proc = multiprocessing.get_context("fork").Process(target=os._exit, args=(0,))
            proc.start()
        proc.join(20)
        assert proc.exitcode == 0
    finally:
        finish.set()
        runner.join()
    [hazard] = lockwise.findings("fork-hazard")
    assert hazard.details["owner"] == "Holder"
    assert any("proc.start()" in f.line for f in hazard.stacks[0].frames)
