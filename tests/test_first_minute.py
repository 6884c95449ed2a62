"""The first minute of a new user: short default output, a short exception,
tracebacks that end at the user's line, pytest suites with
``filterwarnings = error``, and commands that exit as documented."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path

import pytest

import lockwise
from lockwise import DeadlockError

from .runner_helpers import clean_env

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
BANK = ROOT / "examples" / "bank_transfer.py"


def _run(args: list[str], cwd: Path = ROOT, env: dict[str, str] | None = None,
         timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env or clean_env())


def _deadlock_block(text: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("lockwise: deadlock:"))
    block = []
    for line in lines[start:]:
        if not line.strip():
            break
        block.append(line)
    return block


def test_bank_demo_default_output_is_short_and_complete() -> None:
    result = _run([sys.executable, "-m", "lockwise", "run", str(BANK)])
    assert result.returncode == 3, result.stderr
    out = (result.stdout + result.stderr).splitlines()
    assert len(out) <= 40, "\n".join(out)
    err = result.stderr
    for needed in ("teller-1", "teller-2", "Account.lock#1", "Account.lock#2",
                   "bank_transfer.py:24", "bank_transfer.py:26", "Fix: take these locks in one "
                   "global order"):
        assert needed in err, (needed, err)
    block = _deadlock_block(err)
    assert len(block) <= 25, block
    # one line per thread: what it holds, what it wants, at which user line
    per_thread = [line for line in block if " holds " in line and " wants " in line]
    assert len(per_thread) == 2 and all("bank_transfer.py:26" in line for line in per_thread)


def test_bank_demo_deadlock_is_printed_once_and_traceback_ends_at_user_code() -> None:
    result = _run([sys.executable, "-m", "lockwise", "run", str(BANK)])
    err = result.stderr
    assert err.count("lockwise: deadlock:") == 2  # the report, and the exception's one line
    # the report and the traceback are not interleaved (both go to stderr)
    assert re.search(r"^Exception in thread teller-\d:$", err, re.M), err
    traceback = err[err.index("Traceback (most recent call last)"):]
    traceback = traceback[:traceback.index("lockwise.DeadlockError")]
    frames = [line for line in traceback.splitlines() if line.strip().startswith("File ")]
    assert frames and "bank_transfer.py" in frames[-1], traceback
    assert not any(os.sep + "lockwise" + os.sep in line for line in frames), traceback
    message = err[err.index("lockwise.DeadlockError"):].splitlines()[0]
    assert "reported on stderr" in message


def test_verbose_prints_the_full_report() -> None:
    result = _run([sys.executable, "-m", "lockwise", "run", "--verbose", str(BANK)])
    assert result.returncode == 3
    assert "*** DEADLOCK ***" in result.stderr  # the interleaving drawn
    assert 'File "' in result.stderr and "then acquired" in result.stderr


def test_env_verbose_reaches_the_environment_activated_process() -> None:
    env = clean_env()
    env.update(LOCKWISE="1", LOCKWISE_VERBOSE="1")
    result = _run([sys.executable, str(BANK)], env=env)
    assert "*** DEADLOCK ***" in result.stderr


def test_environment_activation_fails_on_request() -> None:
    env = clean_env()
    env.update(LOCKWISE="1")
    assert _run([sys.executable, str(BANK)], env=env).returncode == 0  # documented default
    env.update(LOCKWISE_FAIL_ON="deadlock")
    assert _run([sys.executable, str(BANK)], env=env).returncode == 3
    env.update(LOCKWISE_QUIET="1")
    quiet = _run([sys.executable, str(BANK)], env=env)
    assert quiet.returncode == 3 and "lockwise: deadlock:" not in quiet.stderr.split(
        "Traceback")[0]


def test_readme_documents_the_environment_variables() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in ("LOCKWISE_FAIL_ON", "LOCKWISE_QUIET", "LOCKWISE_VERBOSE", "LOCKWISE_JSON",
                 "LOCKWISE_HANG_TIMEOUT", "--verbose"):
        assert name in readme, name


def test_exception_message_is_short_and_the_finding_is_full() -> None:
    a, b = lockwise.Lock(name="left"), lockwise.Lock(name="right")
    both = threading.Barrier(2, timeout=10)
    errors: list[BaseException] = []

    def worker(first: lockwise.Lock, second: lockwise.Lock) -> None:
        try:
            with first:
                both.wait()
                with second:
                    pass
        except DeadlockError as exc:
            errors.append(exc)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        threads = [threading.Thread(target=worker, args=pair, name=name)
                   for pair, name in (((a, b), "one"), ((b, a), "two"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
    assert not any(t.is_alive() for t in threads)
    assert len(errors) == 1
    error = errors[0]
    assert isinstance(error, DeadlockError) and error.finding is not None
    message = str(error).splitlines()
    assert 3 <= len(message) <= 8, message
    assert all(name in str(error) for name in ("one", "two", "left", "right", "Fix:"))
    assert "test_first_minute.py:" in str(error)  # the user's line
    full = str(error.finding)
    assert len(full.splitlines()) > len(message) and 'File "' in full


def test_warning_is_one_line_and_carries_the_finding() -> None:
    lockwise.configure(on_lock_order="warn")
    a, b = lockwise.Lock(name="w1"), lockwise.Lock(name="w2")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with a, b:
            pass
        with b, a:
            pass
    found = [w for w in caught if issubclass(w.category, lockwise.PotentialDeadlockWarning)]
    assert len(found) == 1
    text = str(found[0].message)
    assert "\n" not in text and "w1" in text and "w2" in text and "lockwise.findings()" in text
    finding = found[0].message.finding  # type: ignore[attr-defined]
    assert finding is not None and finding.kind == "lock-order"
    assert "then acquired" in str(finding)


# ---------------------------------------------------------------- pytest


SUITE = {
    "pytest.ini": "[pytest]\nfilterwarnings =\n    error\n",
    "test_suite.py": textwrap.dedent("""
        import threading

        def test_lock():
            lock = threading.Lock()
            with lock:
                assert lock.locked()

        def test_condition():
            cond = threading.Condition()
            with cond:
                assert not cond.wait(0.01)
    """),
}


@pytest.fixture()
def strict_suite(tmp_path: Path) -> Path:
    for name, text in SUITE.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize("mode", ["run", "env", "flag", "p-option"])
def test_a_suite_with_filterwarnings_error_passes(strict_suite: Path, mode: str) -> None:
    env = clean_env()
    pytest_args = ["-q", "-p", "no:cacheprovider"]
    if mode == "run":
        args = [sys.executable, "-m", "lockwise", "run", "-m", "pytest", *pytest_args]
    elif mode == "env":
        env["LOCKWISE"] = "1"
        args = [sys.executable, "-m", "pytest", *pytest_args]
    elif mode == "flag":
        args = [sys.executable, "-m", "pytest", "--lockwise", *pytest_args]
    else:
        args = [sys.executable, "-m", "pytest", "-p", "lockwise.pytest_plugin", "--lockwise",
                *pytest_args]
    result = _run(args, cwd=strict_suite, env=env, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout, result.stdout
    assert "PytestAssertRewriteWarning" not in result.stdout + result.stderr


def test_report_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    # A report much longer than a pipe's buffer (64 KiB), so that it is
    # still being written when the reader goes away.
    program = tmp_path / "many.py"
    block = textwrap.dedent("""
        a, b = threading.Lock(), threading.Lock()
        with a, b:
            pass
        with b, a:
            pass
    """)
    program.write_text("import threading\n" + block * 100, encoding="utf-8")  # 100 sites
    report = tmp_path / "run.json"
    made = _run([sys.executable, "-m", "lockwise", "run", "--quiet", "--json", str(report),
                 str(program)])
    assert made.returncode == 0, made.stderr
    whole = _run([sys.executable, "-m", "lockwise", "report", str(report)])
    assert len(whole.stdout) > 2 * 65536, len(whole.stdout)
    proc = subprocess.Popen([sys.executable, "-m", "lockwise", "report", str(report)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env())
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()  # as `| head -1` does
    try:
        err = proc.stderr.read().decode()
        proc.wait(60)
    finally:
        proc.kill()
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


# ---------------------------------------------------------------- the README


def _normalise(line: str) -> str:
    """What may differ between two runs of one command: times, thread and lock
    numbers, addresses, the standard library's line numbers, the victim."""
    import re

    line = line.rstrip()
    line = re.sub(r"0x[0-9a-f]+", "0x?", line)
    line = re.sub(r"\b\d+(\.\d+)?(ns|us|ms|s)\b", "T", line)
    line = re.sub(r"(teller-|Thread-|#)\d+", r"\1N", line)
    line = re.sub(r"(queue\.py|threading\.py):\d+", r"\1:N", line)
    line = re.sub(r"alice=\d+ bob=\d+", "alice=N bob=N", line)
    line = re.sub(r"from \d+ creation site", "from N creation site", line)  # by version
    return line


def _readme_samples() -> list[tuple[str, list[str]]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    samples = []
    marker = "<!-- output of: "
    for part in text.split(marker)[1:]:
        command, rest = part.split(" -->", 1)
        block = rest.split("```", 2)[1]
        samples.append((command.strip(), block.strip("\n").splitlines()))
    return samples


def test_readme_has_samples() -> None:
    commands = [command for command, _lines in _readme_samples()]
    assert len(commands) >= 3 and all(c.startswith("lockwise run ") for c in commands)


@pytest.mark.parametrize("command,lines", _readme_samples(),
                         ids=[c for c, _l in _readme_samples()])
def test_readme_sample_is_what_the_command_prints(command: str, lines: list[str]) -> None:
    import shlex

    result = _run([sys.executable, "-m", "lockwise", *shlex.split(command)[1:]], timeout=90)
    printed = {_normalise(line) for line in (result.stdout + result.stderr).splitlines()}
    for line in lines:
        if line.strip() in ("...", "") or line.startswith("  File \"/.../"):
            continue  # elided, or an absolute path that depends on the checkout
        if line.strip().startswith("with ") or line.startswith("Traceback"):
            continue
        assert _normalise(line) in printed, (line, result.stderr)


# ---------------------------------------------------------------- names


def test_names_are_right_per_instance_and_per_subclass(tmp_path: Path) -> None:
    code = textwrap.dedent("""
        import logging, queue, threading, lockwise
        lockwise.install()
        a = threading.Lock(); b = threading.Lock()
        g, x, y = threading.Lock(), threading.Lock(), threading.Lock()
        class Base:
            def __init__(self): self.lock = threading.Lock()
        class Sub(Base):
            pass
        stop = threading.Event()
        t = threading.Thread(target=print)
        q = queue.Queue()
        handlers = [logging.StreamHandler(), logging.FileHandler(__import__("os").devnull)]
        print(a.name, b.name, g.name, x.name, y.name)
        print(Base().lock.name, Sub().lock.name, Base().lock.name)
        print(stop._cond._lock.name, t._started._cond._lock.name, q.mutex.name)
        print(*(h.lock.name for h in handlers))
    """)
    program = tmp_path / "names.py"
    program.write_text(code, encoding="utf-8")
    program_lines = _run([sys.executable, str(program)]).stdout.splitlines()
    assert len(program_lines) == 4, program_lines
    if sys.version_info >= (3, 11):  # columns tell two calls on one line apart
        assert program_lines[0].split() == ["a", "b", "g", "x", "y"]
    else:  # 3.10: one line, several locks: no name rather than a wrong one
        names = program_lines[0].split()
        assert names[1] not in ("a", "a#2"), names
    assert program_lines[1].split() == ["Base.lock", "Sub.lock", "Base.lock"]
    assert program_lines[2].split() == ["stop", "Thread._started", "Queue.mutex"]
    assert program_lines[3].split() == ["StreamHandler.lock", "FileHandler.lock"]


def test_two_locks_on_one_line_are_two_sites() -> None:
    a = lockwise.Lock(); b = lockwise.Lock()  # noqa: E702 - the case under test
    assert str(a._site) == str(b._site)  # one line
    if sys.version_info >= (3, 11):  # 3.10 has no columns: one site, named by its line
        assert a._site is not b._site
        assert (a.name, b.name) == ("a", "b")


def test_an_exited_owner_is_named_by_its_name() -> None:
    lock = lockwise.Lock(name="flag")
    t = threading.Thread(target=lock.acquire, name="short-lived")
    t.start()
    t.join(10)
    assert not t.is_alive()
    try:
        assert "owner=short-lived" in repr(lock), repr(lock)
        snap = lockwise.snapshot()
        assert not any(info.name.startswith("Thread-") for info in snap.threads), snap.threads
    finally:
        lock.release()


def test_profile_rows_never_say_unknown_as_question_marks() -> None:
    from lockwise._report import render_profile

    data = {"sample": 1, "duration_ns": 10, "locks": [{
        "name": "hot", "site": "app.py:5", "acquisitions": 2, "contentions": 1,
        "wait_total_ns": 5, "waiters": [{"site": "app.py:9", "function": "work", "count": 1,
                                         "wait_ns": 5}],
        "holders": [{"site": "?", "function": "?", "count": 1, "wait_ns": 5}]}]}
    text = render_profile(data)
    assert "? in ?" not in text and "held from an unknown site" in text


def test_plugin_installs_before_conftest_and_says_what_it_watched(tmp_path: Path) -> None:
    # shaped like pykka's actor registry: a library lock made at import time
    # by a module that conftest.py imports
    (tmp_path / "registry.py").write_text("import threading\nLOCK = threading.RLock()\n",
                                          encoding="utf-8")
    (tmp_path / "conftest.py").write_text("import registry  # noqa: F401\n", encoding="utf-8")
    (tmp_path / "test_registry.py").write_text(textwrap.dedent("""
        import registry

        def test_registry_lock_is_watched():
            assert type(registry.LOCK).__module__.startswith("lockwise"), type(registry.LOCK)
    """), encoding="utf-8")
    result = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--lockwise"],
                  cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "lockwise: watched the locks made after the plugin installed" in result.stdout


def test_run_summary_says_what_it_watched() -> None:
    result = _run([sys.executable, "-m", "lockwise", "run", "examples/lock_order.py"])
    assert "lockwise: watched the locks made since the program started" in result.stderr


LOGGING_DEADLOCK = '''
import logging, threading, time

app_lock = threading.Lock()
ready = threading.Barrier(2)


class AuditHandler(logging.Handler):
    def emit(self, record):
        with app_lock:  # the handler takes the application's lock
            pass


log = logging.getLogger("audit")
log.addHandler(AuditHandler())
log.setLevel(logging.INFO)


def request():
    with app_lock:
        ready.wait()
        time.sleep(0.2)
        log.info("transfer done")  # needs the handler's lock


def audit():
    ready.wait()
    log.info("audit tick")  # AUDIT: holds the handler's lock, then wants app_lock


threads = [threading.Thread(target=request, name="request"),
           threading.Thread(target=audit, name="auditor")]
for t in threads:
    t.start()
for t in threads:
    t.join(20)
'''


@pytest.mark.timeout(60)
def test_a_lock_taken_inside_the_stdlib_says_which_user_line_led_there(tmp_path: Path) -> None:
    # "acquired at logging/__init__.py:927 in acquire" alone says nothing: the
    # user line that led there comes first (from the holder's live stack).
    prog = tmp_path / "audit.py"
    prog.write_text(LOGGING_DEADLOCK)
    line = next(i for i, text in enumerate(LOGGING_DEADLOCK.splitlines(), 1) if "# AUDIT" in text)
    out = tmp_path / "r.json"
    result = subprocess.run([sys.executable, "-m", "lockwise", "run", "--json", str(out),
                             str(prog)], cwd=tmp_path, capture_output=True, text=True,
                            timeout=40, env=clean_env())
    assert result.returncode == 3, result.stderr
    assert re.search(rf"auditor holds AuditHandler\.lock \(taken at audit\.py:{line}, in "
                     r"logging/__init__\.py:\d+\)", result.stderr), result.stderr
    deadlock = next(f for f in json.loads(out.read_text())["findings"] if f["kind"] == "deadlock")
    auditor = next(t for t in deadlock["details"]["threads"] if t["thread"] == "auditor")
    held = auditor["holds"][0]
    assert "logging" in held["acquired_at"]
    assert held["acquired_from"] == f"{prog}:{line} in audit"
    request = next(t for t in deadlock["details"]["threads"] if t["thread"] == "request")
    assert "acquired_from" not in request["holds"][0]  # taken by the program itself
