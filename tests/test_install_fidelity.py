"""Programs behave as under plain python while lockwise is installed.

Each test here is a difference once seen in CPython's own suites run under
``lockwise run`` (see docs/stdlib-suites.md): the constructor contract of
``threading.Lock``/``RLock`` (``test_threading``: ``test_lock_no_args``,
``test_lock_no_subclass``, ``CRLockTests.test_signature`` on 3.13), and a
lock created late at interpreter shutdown (``test_logging``:
``test_logging_at_shutdown``).
"""

from __future__ import annotations

import sys
import textwrap
import threading
import warnings
from pathlib import Path

import pytest

import lockwise

from .runner_helpers import clean_env, python


def test_installed_lock_takes_no_arguments_and_no_subclass() -> None:
    with lockwise.installed():
        line = sys._getframe().f_lineno + 1
        lock = threading.Lock()
        assert isinstance(lock, lockwise.Lock)
        assert type(lock).__module__ == "lockwise._install"
        assert type(lock).__name__ == "Lock"
        with pytest.raises(TypeError):
            threading.Lock(1)  # type: ignore[call-arg]
        with pytest.raises(TypeError):
            class MyLock(threading.Lock):  # type: ignore[misc]
                pass
        with lock:
            assert lock.locked()
            assert lock.name == "lock"  # the site is the caller's line, not _install's
            assert lock.site == f"{__file__}:{line}"
    assert lockwise.Lock("named").name == "named"  # lockwise's own API unchanged


def test_installed_classes_pickle_by_reference() -> None:
    # multiprocessing's SyncManager registers threading.Lock/RLock (when
    # imported after install) and pickles its registry for spawn/forkserver.
    import pickle

    with lockwise.installed():
        for cls in (threading.Lock, threading.RLock, threading.Condition,
                    threading.Semaphore, threading.BoundedSemaphore):
            assert pickle.loads(pickle.dumps(cls)) is cls


def test_installed_rlock_ignores_arguments_as_threading_does() -> None:
    with lockwise.installed():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            plain = threading.RLock()
        assert caught == []
        for args, kwargs in [((1,), {}), ((), {"a": 1}), ((1, 2), {"a": 1})]:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                rlock = threading.RLock(*args, **kwargs)
            assert isinstance(rlock, lockwise.RLock)
            if sys.version_info >= (3, 13):
                assert [w.category for w in caught] == [DeprecationWarning]
                assert caught[0].filename == __file__
            else:
                assert caught == []
            with rlock, rlock:
                assert rlock.count == 2
        with pytest.raises(TypeError):
            class MyRLock(threading.RLock):  # type: ignore[misc]
                pass
        assert isinstance(plain, lockwise.RLock)


def test_lock_created_at_interpreter_shutdown(tmp_path: Path) -> None:
    # The creation site's label reads the source line; at shutdown linecache
    # cannot import ("sys.meta_path is None"): the lock must still be made.
    # As CPython's test (with a script file, plain python fails as well).
    code = textwrap.dedent("""
        import logging

        class A:
            def __del__(self):
                try:
                    raise ValueError("some error")
                except Exception:
                    logging.exception("exception in __del__")

        a = A()
    """)
    plain = python("-c", code, cwd=tmp_path)
    assert "exception in __del__" in plain.stderr
    result = python("-c", code, cwd=tmp_path, env=clean_env(LOCKWISE="1", LOCKWISE_QUIET="1"))
    assert result.returncode == 0, result.stderr
    assert "exception in __del__" in result.stderr
    assert "ValueError: some error" in result.stderr


@pytest.mark.parametrize("make", [lockwise.Lock, lockwise.RLock])
def test_at_fork_reinit_of_a_held_lock_forgets_it(make: object) -> None:
    # logging's before-fork hook acquires its module lock and, in the child,
    # reinitialises it with _at_fork_reinit(): it must not stay in the forking
    # thread's held list (a stale entry looked like a gate lock guarding every
    # later acquisition, hiding lock-order inversions in the child).
    from lockwise import _state

    lock = make()  # type: ignore[operator]
    lock.acquire()
    assert lock in _state.current_state().held
    lock._at_fork_reinit()
    assert lock not in _state.current_state().held
    assert not lock.locked()
    with lock:
        assert lock.owner is threading.current_thread()
    assert lock not in _state.current_state().held


def test_logging_module_lock_is_instrumented_when_imported_after_install(tmp_path: Path) -> None:
    # logging's module lock is a lockwise RLock when logging is imported while
    # installed (under the runner, or after install()); CPython's own known
    # inversion through it is a declared exception (tests/test_logging_lock.py).
    (tmp_path / "app.py").write_text(
        "import logging, threading\n"
        "h = logging.StreamHandler()\n"
        "print(type(logging._lock).__module__.split('.')[0],"
        " type(h.lock).__module__.split('.')[0])\n")
    result = python("-m", "lockwise", "run", "app.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["lockwise", "lockwise"]
    (tmp_path / "lib.py").write_text(
        "import sys, lockwise\n"
        "assert 'logging' not in sys.modules\n"
        "lockwise.install()\n"
        "import logging\n"
        "h = logging.StreamHandler()\n"
        "print(type(logging._lock).__module__.split('.')[0],"
        " type(h.lock).__module__.split('.')[0])\n")
    result = python("lib.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["lockwise", "lockwise"]
