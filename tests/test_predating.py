"""Locks made before ``install()``: listed at exit and in the JSON report's
``watched`` section, never replaced. Real subprocesses, each time-bounded."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from lockwise import _install, _validate

from .runner_helpers import clean_env, lockwise, python

pytestmark = pytest.mark.timeout(60)

LIB = textwrap.dedent("""
    import threading, _thread
    _registry_lock = threading.RLock()
    ready = threading.Event()
    raw = _thread.allocate_lock()

    class Registry:
        lock = threading.Lock()
        cond = threading.Condition()
""")


def test_late_install_says_which_locks_predate_it(tmp_path: Path) -> None:
    (tmp_path / "latelib.py").write_text(LIB)
    (tmp_path / "app.py").write_text(textwrap.dedent("""
        import latelib, lockwise, threading
        lockwise.install()
        made_after = threading.Lock()
        print(type(latelib.Registry.lock).__module__, type(made_after).__module__)
    """))
    result = python("app.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # Not replaced: another reference may still use the plain one.
    assert result.stdout.split() == ["_thread", "lockwise._install"]
    assert ("lockwise: 5 locks in 1 module predate lockwise and are not watched (latelib: "
            "Registry.cond, Registry.lock, _registry_lock, raw, ready)") in result.stderr


def test_runner_reports_predating_locks_in_summary_and_json(tmp_path: Path) -> None:
    (tmp_path / "latelib.py").write_text(LIB)
    (tmp_path / "sitecustomize.py").write_text("import latelib\n")  # before the runner
    (tmp_path / "app.py").write_text("import threading\nthreading.Lock()\n")
    out = tmp_path / "r.json"
    env = clean_env(PYTHONPATH=str(tmp_path))
    result = lockwise("run", "--json", str(out), "app.py", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("predate lockwise") == 1  # the summary, not again at exit
    data = json.loads(out.read_text())
    _validate.check(data)
    watched = data["watched"]
    assert watched["predating"] == {"locks": 5, "modules": {"latelib": [
        "Registry.cond", "Registry.lock", "_registry_lock", "raw", "ready"]}}
    assert watched["fork_audit"] is True


def test_nothing_predates_a_clean_run(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("import logging, threading\nthreading.Lock()\n")
    out = tmp_path / "r.json"
    result = lockwise("run", "--json", str(out), "app.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "predate" not in result.stderr
    assert json.loads(out.read_text())["watched"]["predating"] == {"locks": 0, "modules": {}}


def test_scan_skips_lockwise_and_the_standard_library() -> None:
    found = _install.scan_predating()
    assert not any(name.startswith("lockwise") or name in ("threading", "queue")
                   for name in found)


def test_one_predating_lock_is_singular(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_install, "predating", {"logging": ["_lock"]})
    assert _install.predating_line() == ("lockwise: 1 lock in 1 module predates lockwise and "
                                         "is not watched (logging: _lock)")
    monkeypatch.setattr(_install, "predating", {"a": ["x", "y"]})
    assert _install.predating_line() == ("lockwise: 2 locks in 1 module predate lockwise and "
                                         "are not watched (a: x, y)")


def test_nothing_is_said_at_exit_once_uninstalled(monkeypatch: pytest.MonkeyPatch,
                                                  capfd: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(_install, "predating", {"logging": ["_lock"]})
    monkeypatch.setattr(_install, "predating_reported", False)
    assert not _install.is_installed()
    _install._print_predating()
    assert capfd.readouterr().err == ""
    _install.install()
    try:
        _install._print_predating()
    finally:
        _install.uninstall()
    assert "1 lock in 1 module predates lockwise" in capfd.readouterr().err
