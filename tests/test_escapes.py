"""Control characters and ANSI escape sequences in thread names, lock names
and paths never reach the terminal raw (issue 14, section 2): screen clears,
window titles and hyperlinks are shown escaped, as ``\\x1b``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import lockwise
from lockwise import _report

from .runner_helpers import lockwise as lockwise_cmd

EVIL = "\x1b[2J\x1b]0;pwned\x07\x1b]8;;http://evil.example\x1b\\x\u202e\x9b31m\r\x08"
#: What must never be written: C0 controls but the line feed, DEL, C1, bidi overrides.
RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def test_printable_escapes_every_control() -> None:
    from lockwise._findings import printable

    shown = printable(EVIL + "\nnext")
    assert not RAW.search(shown) and "\n" not in shown
    assert "\\x1b[2J" in shown and "\\u202e" in shown
    assert printable("a\nb", newlines=True) == "a\nb"
    assert printable(printable(EVIL)) == printable(EVIL)


def test_lockwise_run_output_is_escaped(tmp_path: Path) -> None:
    script = tmp_path / f"prog{EVIL[:8]}.py"
    script.write_text(
        "import threading\n"
        "import lockwise\n"
        f"a = lockwise.Lock(name={('A' + EVIL)!r})\n"
        f"b = lockwise.Lock(name={('B' + EVIL + chr(10) + 'lockwise: no findings.')!r})\n"
        "def body():\n"
        "    with a:\n"
        "        with b:\n"
        "            pass\n"
        "    with b:\n"
        "        with a:\n"
        "            pass\n"
        f"t = threading.Thread(target=body, name={('T' + EVIL)!r})\n"
        "t.start(); t.join(10)\n")
    result = lockwise_cmd("run", "--json", "r.json", script.name, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "potential deadlock" in result.stderr
    assert not RAW.search(result.stderr), result.stderr
    assert "\\x1b[2J" in result.stderr
    # The report keeps the names as they are; showing it escapes them.
    data = json.loads((tmp_path / "r.json").read_text())
    assert any(EVIL in t for f in data["findings"] for t in f["threads"])
    shown = lockwise_cmd("report", "r.json", cwd=tmp_path)
    assert shown.returncode == 0 and "potential deadlock" in shown.stdout
    assert not RAW.search(shown.stdout), shown.stdout
    assert "\nlockwise: no findings." not in shown.stdout  # no forged line from a name


def test_report_from_a_file_is_escaped(tmp_path: Path) -> None:
    finding = {"kind": "deadlock", "summary": "S" + EVIL, "threads": ["T" + EVIL],
               "locks": [{"name": "L" + EVIL, "site": EVIL}], "text": "X" + EVIL,
               "stacks": [{"thread": EVIL, "title": EVIL,
                           "frames": [{"file": EVIL, "line": 1, "function": EVIL,
                                       "code": EVIL}]}]}
    doc = {"findings": [finding, dict(finding, text="", kind="hang"),
                        dict(finding, text="", kind="other")],
           "notes": ["N" + EVIL],
           "profile": {"locks": [{"name": EVIL, "site": EVIL,
                                  "waiters": [{"site": EVIL, "function": EVIL}]}]}}
    (tmp_path / "r.json").write_text(json.dumps(doc))
    shown = lockwise_cmd("report", "r.json", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert not RAW.search(shown.stdout + shown.stderr), shown.stdout
    bad = lockwise_cmd("report", f"missing{EVIL}.json", cwd=tmp_path)
    assert bad.returncode == 2 and not RAW.search(bad.stderr)


def test_exception_messages_are_escaped() -> None:
    lockwise.configure(on_lock_order="raise")
    a = lockwise.Lock(name="A" + EVIL)
    b = lockwise.Lock(name="B" + EVIL)
    with a, b:
        pass
    try:
        with b, a:
            pass
    except lockwise.PotentialDeadlockError as exc:
        assert not RAW.search(str(exc)), str(exc)
    else:
        raise AssertionError("no PotentialDeadlockError")
    assert all(not RAW.search(_report.render(f)) for f in lockwise.findings())


def test_reprs_are_escaped(tmp_path: Path) -> None:
    import threading

    lock = lockwise.Lock(name="L" + EVIL)
    rlock = lockwise.RLock(name="R" + EVIL)
    flock = lockwise.FileLock(tmp_path / "f.lock", name="F" + EVIL, detect=False)
    seen: list[str] = []

    def body() -> None:
        with lock, rlock, flock:
            seen.extend(repr(x) for x in (lock, rlock, flock))

    thread = threading.Thread(target=body, name="T" + EVIL)
    thread.start()
    thread.join(10)
    assert len(seen) == 3 and all("owner=T" in r for r in seen), seen
    assert not any(RAW.search(r) for r in seen), seen


def test_an_internal_error_whose_str_fails_is_still_reported() -> None:
    from lockwise import _findings

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise ValueError("no str")

    _findings.internal_error("a test", Unprintable())
    assert _findings.internal_errors()[-1] == "lockwise: internal error in a test: Unprintable"
