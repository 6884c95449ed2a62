"""logging's module lock stays instrumented; only CPython's own known
inversion through it (python/cpython#96727: ``Handler.close`` takes the module
lock under the handler's lock, ``dictConfig`` takes handler locks under the
module lock) is a declared exception. Each test runs a real program under
``lockwise run``, bounded by a timeout."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from .runner_helpers import lockwise

pytestmark = pytest.mark.timeout(60)


def _run(tmp_path: Path, source: str) -> tuple[object, list[dict[str, object]]]:
    (tmp_path / "app.py").write_text(textwrap.dedent(source))
    out = tmp_path / "r.json"
    result = lockwise("run", "--json", str(out), "--fail-on", "deadlock,lock-order", "app.py",
                      cwd=tmp_path, timeout=50)
    return result, json.loads(out.read_text())["findings"]


def test_cpythons_own_inversion_is_not_reported(tmp_path: Path) -> None:
    # dictConfig (module lock -> each handler's lock, in _clearExistingHandlers)
    # then FileHandler.close (handler lock -> module lock, in Handler.close).
    result, found = _run(tmp_path, f"""
        import logging, logging.config, os
        for _ in range(2):
            h = logging.FileHandler({str(tmp_path / 'log.txt')!r})
            logging.getLogger("app").addHandler(h)
            logging.config.dictConfig({{"version": 1}})
            h2 = logging.FileHandler({str(tmp_path / 'log2.txt')!r})
            h2.close()
        print(type(logging._lock).__module__.split(".")[0])
    """)
    assert result.returncode == 0, result.stderr  # type: ignore[attr-defined]
    assert result.stdout.split() == ["lockwise"]  # type: ignore[attr-defined]
    assert found == []


def test_emit_taking_the_module_lock_is_reported(tmp_path: Path) -> None:
    # The bug of #96727 itself: an emit() that takes the module lock (getLogger
    # of a new name) under its handler's lock, and dictConfig: a real inversion.
    result, found = _run(tmp_path, """
        import logging, logging.config

        class Chatty(logging.Handler):
            def emit(self, record):
                logging.getLogger(f"chatty.{record.msg}")

        log = logging.getLogger("app")
        log.addHandler(Chatty())
        log.warning("one")
        logging.config.dictConfig({"version": 1})
    """)
    assert result.returncode == 3, result.stderr  # type: ignore[attr-defined]
    [finding] = found
    assert finding["kind"] == "lock-order"
    names = {lock["name"] for lock in finding["locks"]}  # type: ignore[attr-defined]
    assert "_lock" in names


def test_deadlock_through_logging_module_lock_is_raised(tmp_path: Path) -> None:
    # Worker holds logging's module lock (as getLogger, addHandler, setLevel
    # and dictConfig do) and waits for an application lock, while the main
    # thread holds that application lock and calls getLogger: a cycle through
    # the module lock, which must raise like any other.
    result, found = _run(tmp_path, """
        import logging, threading
        import lockwise

        app_lock = threading.Lock()
        in_emit, main_holds = threading.Event(), threading.Event()

        def worker():
            with logging._lock:  # as logging.getLogger, setLevel, addHandler do
                in_emit.set()
                main_holds.wait(10)
                try:
                    with app_lock:
                        pass
                except lockwise.DeadlockError:
                    print("worker: DeadlockError", flush=True)

        t = threading.Thread(target=worker, name="Worker")
        t.start()
        in_emit.wait(10)
        with app_lock:
            main_holds.set()
            try:
                logging.getLogger("new.logger")  # waits for the module lock
            except lockwise.DeadlockError:
                print("main: DeadlockError", flush=True)
        t.join(10)
        print("done", flush=True)
    """)
    assert result.returncode == 3, result.stderr  # type: ignore[attr-defined]
    out = result.stdout  # type: ignore[attr-defined]
    assert "DeadlockError" in out and "done" in out
    deadlocks = [f for f in found if f["kind"] == "deadlock"]
    assert len(deadlocks) == 1
    names = {lock["name"] for lock in deadlocks[0]["locks"]}  # type: ignore[attr-defined]
    assert names == {"_lock", "app_lock"}
