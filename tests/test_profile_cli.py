"""``lockwise run --profile`` options, the JSON "profile" section, the pytest option."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from .runner_helpers import lockwise

HOT_PROGRAM = '''
import threading, time

HOLD = 0.3
hot = threading.Lock()
ready = threading.Event()

def _wait_for_waiters():
    deadline = time.monotonic() + 10
    while len(hot.waiters) < 3 and time.monotonic() < deadline:
        time.sleep(0.001)

def holder():
    with hot:  # HOLDER
        ready.set()
        _wait_for_waiters()
        time.sleep(HOLD)

def waiter():
    ready.wait(10)
    with hot:  # WAITER
        pass

threads = [threading.Thread(target=holder)] + [threading.Thread(target=waiter) for _ in range(3)]
for t in threads:
    t.start()
for t in threads:
    t.join(20)
print("done")
'''


def _line(source: str, marker: str) -> int:
    return next(i for i, text in enumerate(source.splitlines(), 1) if marker in text)


def test_run_profile_table_json_and_collapsed(tmp_path: Path) -> None:
    prog = tmp_path / "hot.py"
    prog.write_text(HOT_PROGRAM)
    out, collapsed = tmp_path / "run.json", tmp_path / "wait.folded"
    result = lockwise("run", "--profile", "--json", str(out), "--profile-collapsed",
                      str(collapsed), str(prog), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "done\n"
    # The table on stderr: hot first.
    lines = result.stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("lockwise profile:"))
    assert lines[start + 2].split()[0] == "hot", result.stderr
    assert f"waited at {prog}:{_line(HOT_PROGRAM, '# WAITER')} in waiter" in result.stderr
    assert f"held from {prog}:{_line(HOT_PROGRAM, '# HOLDER')} in holder" in result.stderr
    assert lines[-2] == "lockwise: no findings." and lines[-1].startswith("lockwise: watched")
    # The JSON report's profile section.
    data = json.loads(out.read_text())
    profile = data["profile"]
    assert profile["sample"] == 1 and profile["scaled"] is False
    hot = profile["locks"][0]
    assert hot["name"] == "hot" and hot["contentions"] == 3
    assert abs(hot["wait_total_ns"] / 1e9 - 0.9) <= 0.18
    assert hot["waiters"][0]["site"] == f"{prog}:{_line(HOT_PROGRAM, '# WAITER')}"
    assert hot["holders"][0]["site"] == f"{prog}:{_line(HOT_PROGRAM, '# HOLDER')}"
    assert profile["timeline"]["locks"][0]["name"] == "hot"
    assert "order_graph" in data
    # Collapsed stacks for flame graphs.
    folded = collapsed.read_text().splitlines()
    assert folded and all(re.fullmatch(r"\S.*;?\[wait [^\]]+\] \d+", ln) for ln in folded)
    assert any(ln.startswith("waiter (hot.py:") and "[wait hot]" in ln for ln in folded)
    # lockwise report prints the table too.
    shown = lockwise("report", str(out))
    assert shown.returncode == 0 and "lockwise profile:" in shown.stdout
    assert "hot (hot.py:" in shown.stdout


def test_run_profile_sample(tmp_path: Path) -> None:
    prog = tmp_path / "hot.py"
    prog.write_text(HOT_PROGRAM)
    out = tmp_path / "run.json"
    result = lockwise("run", "--profile-sample", "2", "--json", str(out), str(prog),
                      cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "1 in 2 contentions timed, at random; wait totals are estimates" in result.stderr
    profile = json.loads(out.read_text())["profile"]
    assert profile["sample"] == 2 and profile["scaled"] is True and profile["holds"] is False
    hot = next(d for d in profile["locks"] if d["name"] == "hot")
    assert hot["contentions"] == 3 and hot["acquisitions"] is None


@pytest.mark.parametrize("value", ["0", "-3", "abc", "1.5"])
def test_bad_profile_sample_is_one_line_status_2(tmp_path: Path, value: str) -> None:
    prog = tmp_path / "p.py"
    prog.write_text("print('ran')\n")
    result = lockwise("run", "--profile-sample", value, str(prog), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"lockwise: error: --profile-sample: {value!r} is not a "
                                    "positive integer")


def test_unwritable_collapsed_path_is_status_2(tmp_path: Path) -> None:
    prog = tmp_path / "p.py"
    prog.write_text("print('ran')\n")
    result = lockwise("run", "--profile-collapsed", str(tmp_path / "no" / "such" / "f"),
                      str(prog), cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("lockwise: error: --profile-collapsed: cannot write")


def test_run_without_profile_has_no_profile_section(tmp_path: Path) -> None:
    prog = tmp_path / "p.py"
    prog.write_text("import threading\nwith threading.Lock():\n    pass\n")
    out = tmp_path / "run.json"
    result = lockwise("run", "--json", str(out), str(prog), cwd=tmp_path)
    assert result.returncode == 0
    data = json.loads(out.read_text())
    assert "profile" not in data and "lockwise profile" not in result.stderr


def test_report_html_bad_input(tmp_path: Path) -> None:
    missing = lockwise("report", str(tmp_path / "none.json"), "--html", str(tmp_path / "r.html"))
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    good = tmp_path / "run.json"
    good.write_text(json.dumps({"format": 1, "findings": []}))
    bad_out = lockwise("report", str(good), "--html", str(tmp_path / "no" / "dir" / "r.html"))
    assert bad_out.returncode == 2 and bad_out.stderr.count("\n") == 1
    assert "--html: cannot write" in bad_out.stderr
    ok = lockwise("report", str(good), "--html", str(tmp_path / "r.html"))
    assert ok.returncode == 0 and (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")


def test_pytest_option_prints_the_table(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import threading, time

        def test_contended():
            lock = threading.Lock()
            ready = threading.Event()
            def holder():
                with lock:
                    ready.set()
                    time.sleep(0.05)
            t = threading.Thread(target=holder)
            t.start()
            ready.wait(10)
            with lock:
                pass
            t.join(10)
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--lockwise-profile")
    result.assert_outcomes(passed=1)
    out = result.stdout.str()
    assert "profiling contention" in out
    assert "lockwise profile" in out and "lockwise profile: " in out
    assert re.search(r"^\s+lock \(test_pytest_option_prints_the_table\.py:\d+\)", out, re.M), out
