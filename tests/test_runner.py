"""``lockwise run``: the program runs as under plain python, with lockwise installed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from .runner_helpers import EXAMPLES, clean_env, lockwise, python, report

PROBE = textwrap.dedent("""
    import json, os, sys, threading
    print(json.dumps({
        "argv": sys.argv,
        "name": __name__,
        "path0": sys.path[0],
        "file": __file__,
        "main_is_me": sys.modules["__main__"].__dict__ is globals(),
        "lock": threading.Lock.__module__.split(".")[0],
        "spec": None if __spec__ is None else __spec__.name,
        "package": __package__,
    }))
    sys.exit(int(sys.argv[-1]) if sys.argv[-1].isdigit() else 0)
""")


def _probe(out: str) -> dict[str, object]:
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_script_sees_what_plain_python_shows(tmp_path: Path) -> None:
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "probe.py").write_text(PROBE)
    plain = python("sub/probe.py", "-x", "a b", "7", cwd=tmp_path)
    under = lockwise("run", "sub/probe.py", "-x", "a b", "7", cwd=tmp_path)
    assert plain.returncode == under.returncode == 7, under.stderr
    p, u = _probe(plain.stdout), _probe(under.stdout)
    assert p.pop("lock") == "_thread" and u.pop("lock") == "lockwise"
    assert p == u
    assert u["argv"] == ["sub/probe.py", "-x", "a b", "7"]
    assert u["main_is_me"] is True


def test_module_sees_what_python_m_shows(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(PROBE)
    (pkg / "tool.py").write_text(PROBE)
    for target in ("pkg", "pkg.tool"):
        plain = python("-m", target, "--flag", "3", cwd=tmp_path)
        under = lockwise("run", "-m", target, "--flag", "3", cwd=tmp_path)
        assert plain.returncode == under.returncode == 3, under.stderr
        p, u = _probe(plain.stdout), _probe(under.stdout)
        assert u.pop("lock") == "lockwise"
        p.pop("lock")
        assert p == u, target


def test_uncaught_exception_status_and_traceback(tmp_path: Path) -> None:
    (tmp_path / "boom.py").write_text("def f():\n    raise ValueError('boom')\nf()\n")
    result = lockwise("run", "boom.py", cwd=tmp_path)
    assert result.returncode == 1
    assert "ValueError: boom" in result.stderr
    assert 'boom.py", line 3, in <module>' in result.stderr
    assert "_runner.py" not in result.stderr


def test_system_exit_with_message(tmp_path: Path) -> None:
    (tmp_path / "bye.py").write_text("import sys\nsys.exit('bye now')\n")
    result = lockwise("run", "--quiet", "bye.py", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == "bye now"


@pytest.mark.parametrize("code", ["2**70", "-2**70", "2**63", "-2**63", "2**31", "-1", "256",
                                  "True", "None", "3.5", "'bye'"])
def test_system_exit_status_matches_python(tmp_path: Path, code: str) -> None:
    (tmp_path / "bye.py").write_text(f"raise SystemExit({code})\n")
    plain = python("bye.py", cwd=tmp_path)
    ran = lockwise("run", "--quiet", "bye.py", cwd=tmp_path)
    assert ran.returncode == plain.returncode, (code, ran.stderr)


def test_keyboard_interrupt_exits_as_python_does(tmp_path: Path) -> None:
    """python dies of SIGINT after an uncaught KeyboardInterrupt (the parent
    sees -2; a shell, 130), after the program's atexit handlers."""
    (tmp_path / "ki.py").write_text(
        "import atexit\n"
        "atexit.register(print, 'atexit ran', flush=True)\n"
        "raise KeyboardInterrupt\n")
    plain = python("ki.py", cwd=tmp_path)
    ran = lockwise("run", "--quiet", "ki.py", cwd=tmp_path)
    assert ran.returncode == plain.returncode, (plain.returncode, ran.stderr)
    assert ran.stdout == plain.stdout == "atexit ran\n"
    assert _program_lines(ran.stderr) == _program_lines(plain.stderr)


def _program_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if not line.startswith("lockwise: ")]


def test_syntax_error_in_the_script_shows_what_python_shows(tmp_path: Path) -> None:
    (tmp_path / "syn.py").write_text("x = 1\nif x\n    pass\n")
    plain = python("syn.py", cwd=tmp_path)
    ran = lockwise("run", "syn.py", cwd=tmp_path)
    assert ran.returncode == plain.returncode == 1
    assert _program_lines(ran.stderr) == _program_lines(plain.stderr)


def test_syntax_error_in_a_module_shows_no_runner_frames(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "bad.py").write_text("def f(:\n")
    plain = python("-m", "pkg.bad", cwd=tmp_path)
    ran = lockwise("run", "-m", "pkg.bad", cwd=tmp_path)
    assert ran.returncode == plain.returncode == 1
    assert "lockwise" not in "\n".join(_program_lines(ran.stderr)), ran.stderr
    # python -m adds runpy's two frames on top; the rest is the same
    assert _program_lines(ran.stderr)[-4:] == _program_lines(plain.stderr)[-4:]


def test_waits_for_non_daemon_threads_before_reporting(tmp_path: Path) -> None:
    (tmp_path / "late.py").write_text(textwrap.dedent("""
        import threading
        go = threading.Event()
        a, b = threading.Lock(), threading.Lock()
        def late():
            go.wait()
            with b:
                with a:
                    pass
        threading.Thread(target=late).start()
        with a:
            with b:
                pass
        go.set()
    """))
    result = lockwise("run", "--fail-on", "lock-order", "late.py", cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert "1 lock-order" in result.stderr


def test_bank_transfer_deadlock_is_reported(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    result = lockwise("run", "--json", str(out), str(EXAMPLES / "bank_transfer.py"))
    assert result.returncode == 3, result.stderr
    assert "lockwise: deadlock:" in result.stderr
    assert "DeadlockError" in result.stderr
    assert "1 deadlock" in result.stderr
    found = report(out)
    kinds = sorted(f["kind"] for f in found)
    assert kinds == ["deadlock", "lock-order"]
    deadlock = next(f for f in found if f["kind"] == "deadlock")
    assert sorted(deadlock["threads"]) == ["teller-1", "teller-2"]
    for lock in deadlock["locks"]:
        assert lock["name"].startswith("Account.lock")
        assert lock["site"] == f"{EXAMPLES / 'bank_transfer.py'}:17"
    for stack in deadlock["stacks"]:
        files = {frame["file"] for frame in stack["frames"]}
        assert files == {str(EXAMPLES / "bank_transfer.py")}, files


def test_bank_transfer_fail_on_none_keeps_status(tmp_path: Path) -> None:
    result = lockwise("run", "--fail-on", "none", str(EXAMPLES / "bank_transfer.py"))
    assert result.returncode == 0, result.stderr
    assert "balances: alice=" in result.stdout


def test_lock_order_example(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    result = lockwise("run", "--json", str(out), str(EXAMPLES / "lock_order.py"))
    assert result.returncode == 0, result.stderr
    assert "potential deadlock: lock-order inversion: log_lock -> cache_lock" in result.stderr
    assert result.stderr.count("potential deadlock: lock-order inversion") == 1  # no log copy
    [finding] = report(out)
    assert finding["kind"] == "lock-order"
    assert {lock["name"] for lock in finding["locks"]} == {"log_lock", "cache_lock"}
    failing = lockwise("run", "--fail-on", "lock-order,deadlock", str(EXAMPLES / "lock_order.py"))
    assert failing.returncode == 3


def test_full_queue_hang(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    result = lockwise("run", "--hang-timeout", "0.5", "--json", str(out),
                      str(EXAMPLES / "full_queue.py"), "3")
    assert result.returncode == 0, result.stderr
    assert "the producer is stuck" in result.stdout
    assert "lockwise: hang:" in result.stderr
    assert "stats_lock (" in result.stderr
    assert "held by producer; waiting: consumer" in result.stderr
    found = report(out)
    hangs = [f for f in found if f["kind"] == "hang"]
    assert len(hangs) == 1, found  # once per stuck wait
    hang = hangs[0]
    assert hang["threads"] == ["producer"]
    rows = {row["lock"]["name"]: row for row in hang["details"]["table"]}
    assert rows["stats_lock"]["owner"] == "producer"
    assert rows["stats_lock"]["waiters"] == ["consumer"]
    stacks = {s["thread"]: s for s in hang["stacks"]}
    assert set(stacks) >= {"producer", "consumer", "MainThread"}
    assert stacks["producer"]["frames"][0]["file"] == str(EXAMPLES / "full_queue.py")
    main_files = {f["file"] for f in stacks["MainThread"]["frames"]}
    assert main_files == {str(EXAMPLES / "full_queue.py")}
    assert "lockwise-watchdog" not in stacks
    assert not any(f["kind"] == "deadlock" for f in found)


def test_quiet(tmp_path: Path) -> None:
    result = lockwise("run", "--quiet", str(EXAMPLES / "lock_order.py"))
    assert result.returncode == 0
    assert "lockwise" not in result.stderr


def test_report_written_at_each_finding_survives_kill(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    (tmp_path / "stuck.py").write_text(textwrap.dedent("""
        import threading, time
        a, b = threading.Lock(), threading.Lock()
        with a:
            with b:
                pass
        with b:
            with a:
                pass
        print("ready", flush=True)
        time.sleep(120)
    """))
    proc = subprocess.Popen([sys.executable, "-m", "lockwise", "run", "--json", str(out),
                             "stuck.py"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=clean_env())
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        # Written by the report's writer thread, within milliseconds.
        deadline = time.monotonic() + 5
        while not report(out) and time.monotonic() < deadline:
            time.sleep(0.005)
        [finding] = report(out)
        assert finding["kind"] == "lock-order"
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert [f["kind"] for f in report(out)] == ["lock-order"]


INVERSION = textwrap.dedent("""
    import threading
    def invert(tag):
        a = threading.Lock()
        b = threading.Lock()
        with a:
            with b:
                pass
        with b:
            with a:
                pass
""")


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_forked_child_findings_are_merged(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    (tmp_path / "forky.py").write_text(INVERSION + textwrap.dedent("""
        import os, warnings
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads, 3.12+
        pid = os.fork()
        if pid == 0:
            invert("child")
            os._exit(0)
        os.waitpid(pid, 0)
        invert("parent")
        print(os.getpid(), pid)
    """))
    result = lockwise("run", "--json", str(out), "--fail-on", "lock-order", "forky.py",
                      cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    parent, child = map(int, result.stdout.split())
    pids = sorted(f["pid"] for f in report(out))
    assert pids == sorted([parent, child])
    assert "2 finding(s)" in result.stderr


def test_subprocess_is_covered_and_merged(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    (tmp_path / "child.py").write_text(INVERSION + "invert('child')\n")
    (tmp_path / "parent.py").write_text(textwrap.dedent("""
        import subprocess, sys
        done = subprocess.run([sys.executable, "child.py"], timeout=60)
        print("child status", done.returncode)
    """))
    result = lockwise("run", "--json", str(out), "--fail-on", "lock-order", "parent.py",
                      cwd=tmp_path)
    assert "child status 0" in result.stdout, result.stderr
    assert result.returncode == 3, result.stderr
    [finding] = report(out)
    assert finding["kind"] == "lock-order"
    assert finding["locks"][0]["site"].startswith("child.py:") or \
        finding["locks"][0]["site"].startswith(str(tmp_path / "child.py"))
    # without --json the parent still learns of the child's finding
    result = lockwise("run", "--fail-on", "lock-order", "parent.py", cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert "1 finding(s): 1 lock-order" in result.stderr


@pytest.mark.parametrize("args, expected", [
    (["run", "missing.py"], "no such file: 'missing.py'"),
    (["run", "-m", "no_such_module_xyz"], "no module named 'no_such_module_xyz'"),
    (["run", "--frobnicate", "x.py"], "unknown option '--frobnicate'"),
    (["run", "--hang-timeout", "soon", "x.py"], "--hang-timeout: 'soon' is not a number"),
    (["run", "--hang-timeout", "-1", "x.py"], "--hang-timeout: '-1' is not a number"),
    (["run", "--fail-on", "deadlock,oops", "x.py"], "unknown finding kind 'oops'"),
    (["run"], "expected a script or -m module"),
    (["report", "missing.json"], "no such report file"),
    (["report"], "the following arguments are required"),
    ([], "expected a command"),
    (["launch"], "invalid choice"),
])
def test_bad_input_one_line_status_2(tmp_path: Path, args: list[str], expected: str) -> None:
    result = lockwise(*args, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert result.stdout == ""


def test_bad_input_keeps_existing_report(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    out.write_text('{"findings": [{"kind": "hang", "summary": "old"}]}')
    before = out.read_text()
    for args in (["missing.py"], ["-m", "no_such_module_xyz"], ["--hang-timeout", "x", "a.py"]):
        result = lockwise("run", "--json", str(out), *args, cwd=tmp_path)
        assert result.returncode == 2
        assert out.read_text() == before


def test_unwritable_report_path(tmp_path: Path) -> None:
    (tmp_path / "ok.py").write_text("print('ran')\n")
    result = lockwise("run", "--json", str(tmp_path / "no" / "dir.json"), "ok.py", cwd=tmp_path)
    assert result.returncode == 2
    assert "cannot write report file" in result.stderr
    assert "ran" not in result.stdout


def test_report_command(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    lockwise("run", "--quiet", "--json", str(out), str(EXAMPLES / "bank_transfer.py"))
    shown = lockwise("report", str(out))
    assert shown.returncode == 0
    # Which teller finds the cycle (and is named first) depends on the schedule.
    assert re.search(r"lockwise: deadlock: teller-(1, teller-2|2, teller-1) wait for each other",
                     shown.stdout)
    assert "lockwise: 2 finding(s): 1 deadlock, 1 lock-order" in shown.stdout
    (tmp_path / "bad.json").write_text("{not json")
    bad = lockwise("report", str(tmp_path / "bad.json"))
    assert bad.returncode == 2
    assert "invalid JSON" in bad.stderr and len(bad.stderr.splitlines()) == 1


def test_console_script_help() -> None:
    result = lockwise("run", "--help")
    assert result.returncode == 0
    assert "--hang-timeout" in result.stdout and "--fail-on" in result.stdout


def test_env_activation(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    (tmp_path / "app.py").write_text(
        "import sys, threading\n"
        "print(threading.Lock.__module__.split('.')[0], 'lockwise' in sys.modules)\n" + INVERSION
        + "invert('app')\n")
    inert = python("app.py", cwd=tmp_path)
    assert inert.stdout.split() == ["_thread", "False"]
    assert inert.stderr == ""
    active = python("app.py", cwd=tmp_path, env=clean_env(LOCKWISE="1", LOCKWISE_JSON=str(out)))
    assert active.returncode == 0, active.stderr
    assert active.stdout.split() == ["lockwise", "True"]
    assert "lock-order inversion" in active.stderr
    assert [f["kind"] for f in report(out)] == ["lock-order"]
    failing = python("app.py", cwd=tmp_path,
                     env=clean_env(LOCKWISE="1", LOCKWISE_FAIL_ON="lock-order",
                                   LOCKWISE_QUIET="1"))
    assert failing.returncode == 3
    assert failing.stderr == ""
    off = python("app.py", cwd=tmp_path, env=clean_env(LOCKWISE="0"))
    assert off.stdout.split() == ["_thread", "False"]


def test_env_activation_bad_value_is_ignored_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("print('ran')\n")
    result = python("app.py", cwd=tmp_path,
                    env=clean_env(LOCKWISE="1", LOCKWISE_HANG_TIMEOUT="never"))
    assert result.stdout.strip() == "ran"
    assert result.returncode == 0
    assert result.stderr.splitlines()[0].startswith("lockwise: ignoring LOCKWISE_HANG_TIMEOUT")
