"""``lockwise confirm``: true inversions are confirmed and replayed, impossible
ones come back "not confirmed" with the right reason, nothing hangs.

Every program runs in subprocesses with a time limit, and each test has its
own pytest-timeout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PROGRAMS = os.path.join(HERE, "confirm_programs")

TRUE = ["ab_ba", "ring3", "observer", "logging_handler", "philosophers", "rlock_nesting"]
IMPOSSIBLE = {
    "gate": "gate lock",
    "joined": "happens-before (join)",
    "event_ordered": "happens-before (Event)",
}


def confirm(*args: str, cwd: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("LOCKWISE", "LOCKWISE_JSON", "LOCKWISE_RUN_ID")}
    return subprocess.run([sys.executable, "-m", "lockwise", "confirm", *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=timeout)


def program(name: str) -> str:
    return os.path.join(PROGRAMS, f"{name}.py")


def lock_order(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    return [f for f in doc["findings"] if f["kind"] == "lock-order"]


@pytest.mark.timeout(200)
@pytest.mark.parametrize("name", TRUE)
def test_true_inversion_is_confirmed_and_replayed(name: str, tmp_path: os.PathLike) -> None:
    out = os.path.join(str(tmp_path), "confirm.json")
    start = time.monotonic()
    proc = confirm("--json", out, program(name), cwd=str(tmp_path))
    took = time.monotonic() - start
    assert proc.returncode == 3, proc.stdout + proc.stderr
    [finding] = lock_order(out)
    conf = finding["confirmation"]
    assert conf["status"] == "confirmed", conf
    assert conf["seconds"] < 30 and took < 60, (conf["seconds"], took)
    assert "DeadlockError raised by lockwise's detector" in conf["reason"]
    schedule = conf["schedule"]
    assert schedule["replay"] == f"lockwise confirm --replay {out} --finding 1"
    assert [p for p in schedule["order"] if "released_together" in p], schedule["order"]
    assert len(schedule["points"]) == len(finding["details"]["cycle"])
    assert "replay: lockwise confirm --replay" in proc.stdout
    # The replay reproduces it at least 9 times out of 10.
    rep = confirm("--replay", out, "--finding", "1", "--runs", "10", cwd=str(tmp_path))
    assert rep.returncode == 3, rep.stdout + rep.stderr
    last = rep.stdout.strip().splitlines()[-1]
    reproduced = int(last.rsplit(" ", 1)[-1].split("/")[0])
    assert reproduced >= 9, rep.stdout


@pytest.mark.timeout(200)
@pytest.mark.parametrize("name", sorted(IMPOSSIBLE))
def test_impossible_inversion_is_not_confirmed(name: str, tmp_path: os.PathLike) -> None:
    out = os.path.join(str(tmp_path), "confirm.json")
    proc = confirm("--runs", "3", "--json", out, program(name), cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [finding] = lock_order(out)
    conf = finding["confirmation"]
    assert conf["status"] == "not-confirmed", conf
    assert conf["runs"] == 3
    assert conf["reason"].startswith(IMPOSSIBLE[name]), conf["reason"]
    assert "schedule" not in conf
    assert "not confirmed after 3 run(s)" in proc.stdout


SLEEPER = """\
import threading, time
a = threading.Lock()
b = threading.Lock()
def one():
    with a:
        with b:
            pass
def two():
    time.sleep(0.2)          # outside lockwise: looks like running
    with b:
        with a:
            pass
for target in (one, two):
    t = threading.Thread(target=target)
    t.start()
    t.join()
"""

SINGLE = """\
import threading
a = threading.Lock()
b = threading.Lock()
with a:
    with b:
        pass
with b:
    with a:
        pass
"""

FOREVER = """\
import sys, threading, time
a = threading.Lock()
b = threading.Lock()
with a:
    with b:
        pass
with b:
    with a:
        pass
while len(sys.argv) > 1:   # 'spin': never ends
    time.sleep(0.05)
"""


@pytest.mark.timeout(120)
def test_one_thread_finding_never_hangs(tmp_path: os.PathLike) -> None:
    script = os.path.join(str(tmp_path), "single.py")
    with open(script, "w", encoding="utf-8") as f:
        f.write(SINGLE)
    out = os.path.join(str(tmp_path), "c.json")
    proc = confirm("--runs", "2", "--json", out, script, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [finding] = lock_order(out)
    assert finding["confirmation"]["status"] == "not-confirmed"


@pytest.mark.timeout(120)
def test_join_with_sleep_is_not_confirmed(tmp_path: os.PathLike) -> None:
    script = os.path.join(str(tmp_path), "sleeper.py")
    with open(script, "w", encoding="utf-8") as f:
        f.write(SLEEPER)
    out = os.path.join(str(tmp_path), "c.json")
    proc = confirm("--runs", "2", "--json", out, script, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [finding] = lock_order(out)
    assert finding["confirmation"]["reason"].startswith("happens-before (join)")


@pytest.mark.timeout(120)
def test_a_run_past_the_timeout_is_killed_and_counted(tmp_path: os.PathLike) -> None:
    script = os.path.join(str(tmp_path), "forever.py")
    with open(script, "w", encoding="utf-8") as f:
        f.write(FOREVER)
    report = os.path.join(str(tmp_path), "run.json")
    run = subprocess.run([sys.executable, "-m", "lockwise", "run", "--quiet", "--json", report,
                          script], cwd=str(tmp_path), capture_output=True, timeout=60)
    assert run.returncode == 0
    out = os.path.join(str(tmp_path), "c.json")
    start = time.monotonic()
    proc = confirm("--runs", "2", "--timeout", "2", "--from-report", report, "--json", out,
                   script, "spin", cwd=str(tmp_path))
    assert time.monotonic() - start < 60
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [finding] = lock_order(out)
    conf = finding["confirmation"]
    assert conf["reason"].startswith("timeout: all 2 run(s)"), conf
    assert conf["timeouts"] == 2


@pytest.mark.timeout(120)
def test_from_report_uses_the_reports_findings(tmp_path: os.PathLike) -> None:
    report = os.path.join(str(tmp_path), "run.json")
    subprocess.run([sys.executable, "-m", "lockwise", "run", "--quiet", "--json", report,
                    program("ab_ba")], cwd=str(tmp_path), capture_output=True, timeout=60)
    out = os.path.join(str(tmp_path), "c.json")
    proc = confirm("--from-report", report, "--json", out, program("ab_ba"), cwd=str(tmp_path))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert lock_order(out)[0]["confirmation"]["status"] == "confirmed"
    # The written report still reads as a report, and shows the status.
    shown = subprocess.run([sys.executable, "-m", "lockwise", "report", out],
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "confirmed: lockwise steered the threads into this deadlock" in shown.stdout
    assert f"lockwise confirm --replay {out} --finding 1" in shown.stdout


@pytest.mark.timeout(60)
@pytest.mark.parametrize("args, expected", [
    (["--runs", "zero", "x.py"], "--runs: 'zero' is not valid; expected a positive whole"),
    (["--timeout", "-1", "x.py"], "--timeout: '-1' is not valid; expected a positive number"),
    (["missing.py"], "cannot open 'missing.py': no such file; expected a Python script"),
    ([], "expected a script or -m module"),
    (["--replay", "nope.json"], "--replay: "),
    (["--finding", "1", "x.py"], "--finding: only with --replay FILE"),
    (["--from-report", "nope.json", "x.py"], "--from-report: "),
])
def test_bad_input_is_one_line_and_status_2(args: list[str], expected: str,
                                            tmp_path: os.PathLike) -> None:
    with open(os.path.join(str(tmp_path), "x.py"), "w", encoding="utf-8") as f:
        f.write("pass\n")
    proc = confirm(*args, cwd=str(tmp_path), timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], proc.stderr


@pytest.mark.timeout(120)
def test_replay_of_a_report_without_confirmation_is_bad_input(tmp_path: os.PathLike) -> None:
    report = os.path.join(str(tmp_path), "run.json")
    subprocess.run([sys.executable, "-m", "lockwise", "run", "--quiet", "--json", report,
                    program("joined")], cwd=str(tmp_path), capture_output=True, timeout=60)
    proc = confirm("--replay", report, cwd=str(tmp_path), timeout=60)
    assert proc.returncode == 2
    assert "has no confirmed lock-order finding" in proc.stderr
    proc = confirm("--replay", report, "--finding", "5", cwd=str(tmp_path), timeout=60)
    assert proc.returncode == 2
    assert "--finding: 5 is out of range; expected 1 to 1" in proc.stderr


def test_the_core_does_not_import_the_scheduler() -> None:
    code = ("import sys, lockwise, lockwise._runner, lockwise._primitives; "
            "print(any(m in sys.modules for m in ('lockwise._schedule', 'lockwise._confirm')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.strip() == "False", out.stderr


PYTEST_FILE = """\
import threading


def nest(x, y):
    with x:
        with y:
            pass


def test_inversion():
    a, b = threading.Lock(), threading.Lock()
    threads = [threading.Thread(target=nest, args=(a, b)),
               threading.Thread(target=nest, args=(b, a))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_joined_orders():
    a, b = threading.Lock(), threading.Lock()
    for x, y in ((a, b), (b, a)):
        t = threading.Thread(target=nest, args=(x, y))
        t.start()
        t.join()
"""


@pytest.mark.timeout(240)
def test_pytest_confirm_fails_the_test_and_replays_it(tmp_path: os.PathLike) -> None:
    with open(os.path.join(str(tmp_path), "test_inv.py"), "w", encoding="utf-8") as f:
        f.write(PYTEST_FILE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "--lockwise", "--lockwise-confirm", "test_inv.py"],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True,
                          timeout=200)
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert "1 failed, 1 passed" in out, out
    assert "FAILED test_inv.py::test_inversion" in out
    assert "CONFIRMED, a deadlock" in out
    line = next(x for x in out.splitlines() if "replay: lockwise confirm --replay" in x)
    replay = line.split("replay: ", 1)[1].split()
    assert replay[:3] == ["lockwise", "confirm", "--replay"]
    rep = confirm(*replay[2:], "--runs", "3", cwd=str(tmp_path))
    assert rep.returncode == 3, rep.stdout + rep.stderr
    assert "reproduced 3/3" in rep.stdout or "reproduced 2/3" in rep.stdout, rep.stdout
