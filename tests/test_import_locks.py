"""Import locks in the wait-for relation (``lockwise._imports``).

A module's import lock (``importlib._bootstrap._ModuleLock``) is held by the
thread running the module's top level until it finishes. CPython breaks the
cycles made only of module locks itself; lockwise sees the cycles that mix
module locks with thread locks and joins, and raises like any other deadlock.
Each test runs a real program under ``lockwise run``, bounded by a timeout; the
correct programs must get no finding at all.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from .runner_helpers import clean_env, lockwise

pytestmark = pytest.mark.timeout(90)


def _write(tmp_path: Path, files: dict[str, str]) -> None:
    for name, source in files.items():
        (tmp_path / name).write_text(textwrap.dedent(source))


def _run(tmp_path: Path, files: dict[str, str],
         *options: str) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    _write(tmp_path, files)
    out = tmp_path / "r.json"
    result = lockwise("run", "--json", str(out), *options, "app.py", cwd=tmp_path, timeout=60)
    findings: list[dict[str, Any]] = json.loads(out.read_text())["findings"]
    return result, findings


def _import_lock_names(finding: dict[str, Any]) -> list[str]:
    return [lock["name"] for lock in finding["locks"] if lock.get("type") == "import lock"]


def test_lock_and_import_cycle_raises_in_one_thread(tmp_path: Path) -> None:
    # The worker runs slow_mod's top level (it holds slow_mod's import lock)
    # and waits for app_lock; the main thread holds app_lock and imports
    # slow_mod. Under plain Python both wait forever.
    result, found = _run(tmp_path, {
        "shared.py": """
            import threading
            app_lock = threading.Lock()
            importing = threading.Event()
            main_holds = threading.Event()
        """,
        "slow_mod.py": """
            import shared
            shared.importing.set()
            shared.main_holds.wait(10)
            with shared.app_lock:
                pass
            VALUE = 42
        """,
        "app.py": """
            import threading, time
            import lockwise, shared

            def worker():
                try:
                    import slow_mod
                    print("worker: imported", slow_mod.VALUE, flush=True)
                except lockwise.DeadlockError:
                    print("worker: DeadlockError", flush=True)

            t = threading.Thread(target=worker, name="Worker")
            t.start()
            shared.importing.wait(10)
            with shared.app_lock:
                shared.main_holds.set()
                time.sleep(0.05)  # the worker now waits for app_lock
                try:
                    import slow_mod
                    print("main: imported", flush=True)
                except lockwise.DeadlockError:
                    print("main: DeadlockError", flush=True)
            t.join(20)
            print("done", flush=True)
        """,
    })
    assert result.returncode == 3, result.stderr
    lines = result.stdout.split()
    assert result.stdout.count("DeadlockError") == 1, result.stdout
    assert lines[-1] == "done"
    deadlocks = [f for f in found if f["kind"] == "deadlock"]
    assert len(deadlocks) == 1 and len(found) == 1, found
    finding = deadlocks[0]
    assert finding["details"]["rule"] == "cycle"
    # The wait that closes the cycle raises (the main thread's import), and the
    # worker carries on; only if the worker's periodic check ran in the few
    # microseconds between that wait's registration and its check is the
    # worker the victim.
    if finding["details"]["victim"] == "MainThread":
        assert "main: DeadlockError" in result.stdout
        assert "worker: imported 42" in result.stdout
    else:
        assert "worker: DeadlockError" in result.stdout
    assert _import_lock_names(finding) == ["import of slow_mod"]
    assert {lock["name"] for lock in finding["locks"]} == {"app_lock", "import of slow_mod"}
    waits = {e["thread"]: e["waits_for"] for e in finding["details"]["threads"]}
    assert waits["MainThread"]["lock"]["name"] == "import of slow_mod"
    assert waits["MainThread"]["held_by"] == "Worker"
    assert waits["Worker"]["lock"]["name"] == "app_lock"
    assert "import lock" in result.stderr and "import of slow_mod" in result.stderr
    # The brief report points at the user's lines, not at importlib's frames.
    assert "at app.py:19 in <module>" in result.stderr or "at slow_mod.py:5" in result.stderr
    assert "at <frozen" not in result.stderr


def test_lock_and_import_cycle_closed_by_the_lock_wait(tmp_path: Path) -> None:
    # The same cycle formed in the other order: the main thread already waits
    # for the import when the worker, running the module, wants the lock. The
    # worker raises (in the module's top level: its import fails) and the main
    # thread's import then runs the module itself.
    result, found = _run(tmp_path, {
        "shared.py": """
            import threading
            app_lock = threading.RLock()
            importing = threading.Event()
            go = threading.Event()
        """,
        "slow_mod.py": """
            import shared
            shared.importing.set()
            shared.go.wait(10)
            with shared.app_lock:
                pass
            VALUE = 7
        """,
        "app.py": """
            import threading, time
            import lockwise, shared

            def worker():
                try:
                    import slow_mod
                except lockwise.DeadlockError:
                    print("worker: DeadlockError", flush=True)

            t = threading.Thread(target=worker, name="Worker")
            t.start()
            shared.importing.wait(10)
            with shared.app_lock:
                threading.Timer(0.2, shared.go.set).start()
                try:
                    import slow_mod  # waits for the worker's import
                    print("main: imported", flush=True)
                except lockwise.DeadlockError:
                    print("main: DeadlockError", flush=True)
            t.join(20)
            print("done", flush=True)
        """,
    })
    assert result.returncode == 3, result.stderr
    assert result.stdout.count("DeadlockError") == 1, result.stdout
    assert result.stdout.split()[-1] == "done"
    deadlocks = [f for f in found if f["kind"] == "deadlock"]
    assert len(deadlocks) == 1, found
    finding = deadlocks[0]
    assert _import_lock_names(finding) == ["import of slow_mod"]
    # The worker's wait for app_lock closes the cycle: it raises, in the
    # module's top level (so its import fails), and the main thread's import
    # returns. (The main thread only if its periodic check ran in the few
    # microseconds between that wait's registration and its check.)
    if finding["details"]["victim"] == "Worker":
        assert "worker: DeadlockError" in result.stdout
        assert "main: imported" in result.stdout
    else:
        assert "main: DeadlockError" in result.stdout


def test_import_and_join_cycle_raises_in_one_thread(tmp_path: Path) -> None:
    # A module's top level starts a thread and joins it; the thread imports
    # the module (a classic freeze: the import lock is held until the top level
    # finishes, which waits for the thread). The thread raises, the join
    # returns, the import completes.
    result, found = _run(tmp_path, {
        "startup_mod.py": """
            import threading, time
            import lockwise

            def _load():
                time.sleep(0.2)  # the main thread is in join() by now
                try:
                    from startup_mod import CONFIG
                    print("loader: got", CONFIG, flush=True)
                except lockwise.DeadlockError:
                    print("loader: DeadlockError", flush=True)
                except ImportError:  # the main thread was the victim: a failed module
                    print("loader: ImportError", flush=True)

            _t = threading.Thread(target=_load, name="Loader")
            _t.start()
            _t.join()
            CONFIG = {"ready": True}
        """,
        "app.py": """
            import lockwise
            try:
                import startup_mod
                print("main: imported", startup_mod.CONFIG, flush=True)
            except lockwise.DeadlockError:
                print("main: DeadlockError", flush=True)
            print("done", flush=True)
        """,
    })
    assert result.returncode == 3, result.stderr
    assert result.stdout.count("DeadlockError") == 1, result.stdout
    assert result.stdout.split()[-1] == "done"
    deadlocks = [f for f in found if f["kind"] == "deadlock"]
    assert len(deadlocks) == 1 and len(found) == 1, found
    finding = deadlocks[0]
    assert finding["details"]["rule"] == "cycle"
    # The loader's import closes the cycle and raises (the main thread only if
    # its periodic check ran between that wait's registration and its check).
    if finding["details"]["victim"] == "Loader":
        assert "loader: DeadlockError" in result.stdout
        assert "main: imported {'ready': True}" in result.stdout
    else:
        assert "main: DeadlockError" in result.stdout
    waits = {e["thread"]: e["waits_for"] for e in finding["details"]["threads"]}
    assert waits["Loader"]["lock"]["name"] == "import of startup_mod"
    assert waits["MainThread"] == {"kind": "join", "thread": "Loader", "timed": False}


def test_import_waiting_for_a_module_that_waits_for_an_event_is_a_stall(
        tmp_path: Path) -> None:
    # No cycle of owners: the module's top level waits for an Event that only
    # a thread blocked on the module's import lock would set. Every thread is
    # blocked on something lockwise sees: the "nobody left to run" rule.
    result, found = _run(tmp_path, {
        "needs_event.py": """
            import threading, time
            import shared

            def _set_later():
                time.sleep(0.1)
                import needs_event  # waits for the import lock: never sets
                shared.ready.set()

            threading.Thread(target=_set_later, name="Setter").start()
            shared.ready.wait()
        """,
        "shared.py": """
            import threading
            ready = threading.Event()
        """,
        "app.py": """
            import lockwise
            try:
                import needs_event
            except lockwise.DeadlockError:
                print("main: DeadlockError", flush=True)
            print("done", flush=True)
        """,
    })
    assert result.returncode == 3, result.stderr
    assert result.stdout.splitlines() == ["main: DeadlockError", "done"], result.stdout
    deadlocks = [f for f in found if f["kind"] == "deadlock"]
    assert len(deadlocks) == 1, found
    assert deadlocks[0]["details"]["rule"] == "stall"
    assert _import_lock_names(deadlocks[0]) == ["import of needs_event"]


CONCURRENT_APP = """
    import sys, threading, time
    import shared

    ROUNDS, THREADS = 4, 8
    errors = []

    def importer(names, barrier):
        try:
            barrier.wait(10)
            for name in names:
                __import__(name)
        except BaseException as exc:
            errors.append(repr(exc))

    for r in range(ROUNDS):
        # Many threads importing the same modules at once (each module's top
        # level sleeps and takes a lock briefly), and the two halves of a
        # circular import started together from two threads: CPython's own
        # check hands one of them the partially initialised module.
        barrier = threading.Barrier(THREADS + 2)
        threads = [threading.Thread(target=importer, args=([f"same_{r}_{i}" for i in range(3)],
                                                            barrier))
                   for _ in range(THREADS)]
        threads.append(threading.Thread(target=importer, args=([f"circ_{r}_a"], barrier)))
        threads.append(threading.Thread(target=importer, args=([f"circ_{r}_b"], barrier)))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i in range(3):
            assert sys.modules[f"same_{r}_{i}"].DONE
        assert sys.modules[f"circ_{r}_a"].use() == ("a", "b")
        assert sys.modules[f"circ_{r}_b"].use() == ("b", "a")
    print("errors:", errors, flush=True)
    print("counter:", shared.counter, flush=True)
"""


def _concurrent_files() -> dict[str, str]:
    files = {
        "shared.py": """
            import threading
            lock = threading.Lock()
            rlock = threading.RLock()
            counter = 0
        """,
        "app.py": CONCURRENT_APP,
    }
    for r in range(4):
        for i in range(3):
            files[f"same_{r}_{i}.py"] = f"""
                import time, shared
                time.sleep(0.02)
                with shared.lock:
                    shared.counter += 1
                with shared.rlock:
                    time.sleep(0.005)
                {f"import same_{r}_{i - 1}" if i else ""}
                DONE = True
            """
        files[f"circ_{r}_a.py"] = f"""
            import time
            time.sleep(0.05)
            import circ_{r}_b
            def use():
                return ("a", circ_{r}_b.NAME)
            NAME = "a"
        """
        files[f"circ_{r}_b.py"] = f"""
            import time
            time.sleep(0.05)
            import circ_{r}_a
            def use():
                return ("b", circ_{r}_a.NAME)
            NAME = "b"
        """
    return files


def test_concurrent_and_circular_imports_are_not_reported(tmp_path: Path) -> None:
    result, found = _run(tmp_path, _concurrent_files(), "--fail-on", "all")
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert found == []
    assert "errors: []" in result.stdout
    assert "counter: 12" in result.stdout
    assert "internal error" not in result.stderr


def test_module_taking_a_lock_held_briefly_is_not_reported(tmp_path: Path) -> None:
    # A thread holds a lock for a while (no import); two threads import a
    # module whose top level takes that lock: one waits for the lock, the other
    # for the first one's import. A chain, no cycle: no finding.
    result, found = _run(tmp_path, {
        "shared.py": """
            import threading
            lock = threading.Lock()
            held = threading.Event()
        """,
        "locking_mod.py": """
            import shared
            with shared.lock:
                VALUE = 5
        """,
        "app.py": """
            import threading, time
            import shared

            def holder():
                with shared.lock:
                    shared.held.set()
                    time.sleep(0.4)

            def importer():
                import locking_mod
                assert locking_mod.VALUE == 5

            threads = [threading.Thread(target=holder)]
            threads[0].start()
            shared.held.wait(10)
            threads += [threading.Thread(target=importer) for _ in range(3)]
            for t in threads[1:]:
                t.start()
            for t in threads:
                t.join()
            print("done", flush=True)
        """,
    }, "--fail-on", "all")
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert found == []
    assert result.stdout.split() == ["done"]


def test_patched_only_while_installed(tmp_path: Path) -> None:
    # Importing lockwise changes nothing; install() wraps _ModuleLock.acquire,
    # the last uninstall() restores CPython's own.
    probe = textwrap.dedent("""
        import _frozen_importlib as bootstrap
        original = bootstrap._ModuleLock.acquire
        import lockwise
        from lockwise import _imports
        print(bootstrap._ModuleLock.acquire is original)
        lockwise.install()
        lockwise.install()
        print(_imports.is_patched() == _imports.SUPPORTED)
        lockwise.uninstall()
        print(_imports.is_patched() == _imports.SUPPORTED)
        lockwise.uninstall()
        print(bootstrap._ModuleLock.acquire is original)
        import json  # imports still work
        print(_imports.SUPPORTED)
    """)
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=30, env=clean_env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True"] * 5


def test_proxy_waits_plainly_after_uninstall(tmp_path: Path) -> None:
    # A module lock that got its wakeup proxy while installed keeps it; after
    # uninstall() its waits are plain ones again (nothing registered).
    probe = textwrap.dedent("""
        import threading, time
        import _frozen_importlib as bootstrap
        import lockwise
        from lockwise import _imports, _state

        lockwise.install()
        lock = bootstrap._ModuleLock("probe")
        lock.acquire(); lock.release()
        assert type(lock.wakeup) is _imports._Wakeup
        lockwise.uninstall()
        lock.acquire()
        seen = []

        def waiter():
            lock.acquire()
            lock.release()

        t = threading.Thread(target=waiter)
        t.start()
        time.sleep(0.1)
        seen = [ts.waiting for ts in list(_state.states.values()) if ts.waiting is not None]
        lock.release()
        t.join(5)
        print(not t.is_alive(), seen == [])
    """)
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=30, env=clean_env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True"]


def test_import_made_during_an_import_wait_leaves_cpythons_bookkeeping_intact(
        tmp_path: Path) -> None:
    # lockwise's checks run in the waiting thread and may import a module for
    # the first time (a report reads source lines through linecache). On 3.10
    # and 3.11 CPython keeps one _blocking_on entry per thread, which such a
    # nested import would delete: the waiting import must still succeed.
    _write(tmp_path, {
        "slow_mod.py": """
            import time
            time.sleep(0.3)
            VALUE = 3
        """,
        "fresh_mod.py": "X = 1\n",
        "app.py": """
            import sys, threading, time
            import _frozen_importlib as bootstrap
            import lockwise
            from lockwise import _waitfor

            lockwise.install()
            imported = []

            def import_in_check(ts):
                if ts.waiting is not None and not imported:
                    imported.append(__import__("fresh_mod"))

            _waitfor.wait_checks.append(import_in_check)
            results = []

            def importer():
                try:
                    import slow_mod
                    results.append(slow_mod.VALUE)
                except BaseException as exc:
                    results.append(repr(exc))

            first = threading.Thread(target=importer)
            first.start()
            time.sleep(0.1)  # the first thread runs slow_mod's top level
            second = threading.Thread(target=importer)
            second.start()
            first.join(10)
            second.join(10)
            print(results, [m.X for m in imported], flush=True)
            print(not bootstrap._blocking_on.get(second.ident))
        """,
    })
    result = subprocess.run([sys.executable, "app.py"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=30, env=clean_env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["[3, 3] [1]", "True"], result.stderr
    assert "internal error" not in result.stderr
