"""Other local users: what lockwise refuses to trust (issue 14, section 1).

Most tests make the hostile situation with directories and files they create
(bad modes, symlinks, another owner: root can chown to ``nobody``). Those
marked ``second_user`` run a step as another local user, in a forked child
that calls ``os.setuid``; they need root (as CI runs) and skip otherwise.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import sqlite3
import stat
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest

import lockwise
from lockwise import _findings, _html, _jsonreport, _shared_store

from .runner_helpers import clean_env
from .runner_helpers import lockwise as lockwise_cmd


def test_html_writer_does_not_follow_a_planted_temporary_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "report.html"
    # The names the old writer used: path.tmpPID, predictable by anyone.
    for pid in range(os.getpid() - 2, os.getpid() + 3):
        os.symlink(victim, f"{out}.tmp{pid}")
    data = _jsonreport.document([])
    _html.write(str(out), data, [])
    assert victim.read_text() == "precious\n"
    assert out.read_text().startswith("<!DOCTYPE html>")
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".report.html")]
    assert leftovers == []


# ---------------------------------------------------------------- the shared store's directory

NOBODY = 65534
FINDING = lockwise.Finding(kind="lock-order", summary="found", threads=["T"],
                           locks=[lockwise.LockRef("a", "x.py:1")])


def second_user() -> tuple[int, int]:
    """(uid, gid) of a second local user to act as the attacker; skip without root."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("needs root to act as a second local user (CI runs as root)")
    import pwd

    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no 'nobody' user to act as a second local user")
    return entry.pw_uid, entry.pw_gid


def as_user(user: tuple[int, int], step: Callable[[], None], timeout: float = 10.0) -> int:
    """Run ``step`` as ``user`` in a forked child; its exit status (0: step returned)."""
    pid = os.fork()
    if pid == 0:  # the child: become the other user, run the step, leave
        status = 1
        try:
            os.setgroups([])
            os.setgid(user[1])
            os.setuid(user[0])
            step()
            status = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(status)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status) if hasattr(
                os, "waitstatus_to_exitcode") else status >> 8
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"the step as uid {user[0]} did not end within {timeout}s")


@pytest.fixture
def world_tmp() -> Iterator[Path]:
    """A sticky, world-writable directory, as /tmp is (tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="lockwise-world-", dir="/tmp"))
    path.chmod(0o1777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def default_store_env(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], None]:
    """Point the default store directory at $TMPDIR (no XDG_RUNTIME_DIR, no override)."""
    monkeypatch.delenv("LOCKWISE_SHARED_DIR", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    lockwise.configure(shared_dir=None)

    def use(tmpdir: Path) -> None:
        monkeypatch.setenv("TMPDIR", str(tmpdir))

    return use


def refused(lock_dir: Path, store_dir: Optional[str], capsys: pytest.CaptureFixture[str],
            problem: str) -> None:
    """A FileLock whose store directory is unfit: it still excludes, detection
    across processes is off, and one line on stderr (and a note) says why."""
    path = str(lock_dir / "a.lock")
    lock = lockwise.FileLock(path, shared_dir=store_dir)
    other = lockwise.FileLock(path, detect=False)
    assert lock.acquire(timeout=5)
    assert not other.acquire(timeout=0.05)  # mutual exclusion holds
    lock.release()
    assert other.acquire(timeout=5)
    other.release()
    assert lock.acquire(timeout=5)  # said once, not at every acquire
    lock.release()
    err = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(err) == 1, err
    assert err[0].startswith("lockwise: warning: ") and problem in err[0]
    assert "detection across processes is off" in err[0]
    assert [n for n in _findings.notes() if problem in n]
    assert lock.holder() is None


def test_store_dir_writable_by_others_is_refused(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    store.mkdir()
    store.chmod(0o777)
    refused(tmp_path, str(store), capsys, "writable by group or others")
    assert list(store.iterdir()) == []


def test_store_dir_that_is_a_symlink_is_refused(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    (tmp_path / "store").symlink_to(target)
    refused(tmp_path, str(tmp_path / "store"), capsys, "is a symbolic link")
    assert list(target.iterdir()) == []


def test_store_dir_owned_by_another_user_is_refused(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to chown a directory to another user")
    store = tmp_path / "store"
    store.mkdir(mode=0o700)
    os.chown(store, NOBODY, NOBODY)
    refused(tmp_path, str(store), capsys, f"owned by uid {NOBODY}")
    assert list(store.iterdir()) == []


def test_store_file_that_is_a_symlink_is_not_followed(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    other_db = tmp_path / "app.sqlite3"
    conn = sqlite3.connect(other_db)
    conn.execute("CREATE TABLE precious(x)")
    conn.commit()
    conn.close()
    store = tmp_path / "store"
    store.mkdir(mode=0o700)
    (store / "waitfor.sqlite3").symlink_to(other_db)
    refused(tmp_path, str(store), capsys, "waitfor.sqlite3")
    conn = sqlite3.connect(other_db)
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    conn.close()
    assert tables == {"precious"} and mode == "delete"


def test_store_prefers_a_private_xdg_runtime_dir(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.delenv("LOCKWISE_SHARED_DIR", raising=False)
    lockwise.configure(shared_dir=None)
    assert _shared_store.default_dir() == str(runtime / "lockwise")
    lock = lockwise.FileLock(tmp_path / "a.lock")
    with lock:
        assert lock.holder() is not None
    assert (runtime / "lockwise" / "waitfor.sqlite3").exists()
    runtime.chmod(0o777)  # not private: not used
    assert _shared_store.default_dir() != str(runtime / "lockwise")


def test_another_users_store_dir_in_tmp_is_refused(
        world_tmp: Path, default_store_env: Callable[[Path], None],
        capsys: pytest.CaptureFixture[str]) -> None:
    """The attack: another user creates the predictable $TMPDIR/lockwise-<uid>
    first, open to all, to read and rewrite the victim's wait-for records."""
    user = second_user()
    default_store_env(world_tmp)
    planted = world_tmp / f"lockwise-{os.geteuid()}"

    def plant() -> None:
        os.mkdir(planted)
        os.chmod(planted, 0o777)

    assert as_user(user, plant) == 0
    refused(world_tmp, None, capsys, f"owned by uid {user[0]}")
    assert list(planted.iterdir()) == []


def test_another_user_cannot_read_the_store(world_tmp: Path,
                                            default_store_env: Callable[[Path], None]) -> None:
    user = second_user()
    default_store_env(world_tmp)
    lock = lockwise.FileLock(world_tmp / "a.lock", name="secret-name")
    with lock:
        assert lock.holder() is not None
    store = world_tmp / f"lockwise-{os.geteuid()}"
    assert stat.S_IMODE(store.stat().st_mode) == 0o700

    def snoop() -> None:
        try:
            os.listdir(store)
        except PermissionError:
            pass
        else:
            raise AssertionError("the other user listed the store directory")
        try:
            open(store / "waitfor.sqlite3", "rb").close()
        except PermissionError:
            return
        raise AssertionError("the other user opened the store")

    assert as_user(user, snoop) == 0


def test_refused_store_is_noted_in_the_report(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    store.chmod(0o777)
    (tmp_path / "prog.py").write_text(
        "import lockwise\n"
        "with lockwise.FileLock('a.lock'):\n"
        "    pass\n")
    result = lockwise_cmd("run", "--json", "run.json", "prog.py", cwd=tmp_path,
                          env=clean_env(LOCKWISE_SHARED_DIR=str(store)))
    assert result.returncode == 0, result.stderr
    warned = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warned) == 1 and "writable by group or others" in warned[0]
    notes = json.loads((tmp_path / "run.json").read_text())["notes"]
    assert len(notes) == 1 and "writable by group or others" in notes[0]
    shown = lockwise_cmd("report", "run.json", cwd=tmp_path)
    assert shown.returncode == 0
    assert "lockwise: note: not using" in shown.stdout
    page = lockwise_cmd("report", "run.json", "--html", "r.html", cwd=tmp_path)
    assert page.returncode == 0
    assert 'id="notes"' in (tmp_path / "r.html").read_text()


def test_a_stalled_store_degrades_quickly_and_visibly(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A process stopped inside a store transaction (or anyone holding one)
    must not stall FileLock.acquire for long, nor switch detection off silently."""
    store = tmp_path / "store"
    path = str(tmp_path / "a.lock")
    lock = lockwise.FileLock(path, shared_dir=str(store))
    with lock:
        pass
    blocker = sqlite3.connect(str(store / "waitfor.sqlite3"), isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    took: list[float] = []
    excluded: list[bool] = []

    def take() -> None:
        start = time.monotonic()
        with lock:
            took.append(time.monotonic() - start)
            excluded.append(not lockwise.FileLock(path, detect=False).acquire(timeout=0.05))
        start = time.monotonic()
        with lock:
            took.append(time.monotonic() - start)

    thread = threading.Thread(target=take, daemon=True)
    thread.start()
    try:
        thread.join(timeout=10)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        thread.join(timeout=40)
    assert len(took) == 2 and took[0] < _shared_store.BUSY_TIMEOUT + 1.5, took
    assert took[1] < 0.5 and excluded == [True]
    err = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(err) == 1 and err[0].startswith("lockwise: warning: ")
    assert "stayed locked" in err[0] and "detection across processes is off" in err[0]
    assert any("stayed locked" in n for n in _findings.notes())


# ---------------------------------------------------------------- report merges, temporary reports


def test_report_merge_cannot_be_stalled_through_the_reports_directory(
        world_tmp: Path, default_store_env: Callable[[Path], None], tmp_path: Path) -> None:
    """The merge used to flock the report's directory (often /tmp): anyone
    could hold that flock and stall the thread that just found a deadlock."""
    default_store_env(tmp_path)
    path = world_tmp / "run.json"
    writer = _jsonreport.JsonWriter(str(path), fresh=True, source=lambda: [FINDING])
    attacker = os.open(world_tmp, os.O_RDONLY)
    fcntl.flock(attacker, fcntl.LOCK_EX)
    thread = threading.Thread(target=writer.flush, daemon=True)
    try:
        thread.start()
        thread.join(timeout=5)
        assert not thread.is_alive(), "the merge waited for a lock another user holds"
    finally:
        os.close(attacker)
        thread.join(timeout=10)
    assert [f["summary"] for f in json.loads(path.read_text())["findings"]] == ["found"]
    assert sorted(p.name for p in world_tmp.iterdir()) == ["run.json"]


def test_temporary_reports_stay_in_the_private_dir_and_stale_ones_go(
        tmp_path: Path, default_store_env: Callable[[Path], None]) -> None:
    """A run that ends with os._exit (or is killed) cannot remove its
    temporary report: it is in the per-user directory, and the next run
    removes it (its pid is gone)."""
    (tmp_path / "prog.py").write_text(
        "import os\nprint(os.environ['LOCKWISE_JSON'], flush=True)\nos._exit(0)\n")
    env = clean_env(TMPDIR=str(tmp_path))
    env.pop("XDG_RUNTIME_DIR", None)
    first = lockwise_cmd("run", "prog.py", cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr
    left = Path(first.stdout.strip())
    assert left.parent == tmp_path / f"lockwise-{os.geteuid()}"
    assert left.exists() and stat.S_IMODE(left.stat().st_mode) == 0o600
    second = lockwise_cmd("run", "prog.py", cwd=tmp_path, env=env)
    assert second.returncode == 0, second.stderr
    assert not left.exists()
    assert Path(second.stdout.strip()).exists()


# ---------------------------------------------------------------- FileLock's own path


def test_filelock_does_not_follow_a_symlink_at_its_path(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "created-by-attacker"
    target.parent.mkdir()
    (tmp_path / "a.lock").symlink_to(target)
    lock = lockwise.FileLock(tmp_path / "a.lock", detect=False)
    with pytest.raises(OSError, match="symbolic link"):
        lock.acquire(timeout=1)
    assert not target.exists()
    with pytest.raises(OSError, match="symbolic link"):
        lock.locked()  # the probe must not create the target either
    assert not target.exists()


def test_store_dir_removed_by_a_tmp_cleaner_is_made_again(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    with lockwise.FileLock(tmp_path / "a.lock", shared_dir=str(store)):
        pass
    shutil.rmtree(store)
    seen: list[Optional[dict[str, object]]] = []

    def use() -> None:  # a new thread: a new store connection
        lock = lockwise.FileLock(tmp_path / "b.lock", shared_dir=str(store))
        with lock:
            seen.append(lock.holder())

    thread = threading.Thread(target=use, daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert len(seen) == 1 and seen[0] is not None
    assert stat.S_IMODE(store.stat().st_mode) == 0o700
    assert capsys.readouterr().err == ""


def test_a_stalled_store_is_used_again_once_it_answers(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """When the stopped process goes on, detection comes back (after the rows
    this process wrote before the stall, possibly stale, are removed)."""
    monkeypatch.setattr(_shared_store, "RETRY_STALLED", 0.1)
    store = tmp_path / "store"
    held = lockwise.FileLock(tmp_path / "held.lock", shared_dir=str(store))
    lock = lockwise.FileLock(tmp_path / "a.lock", shared_dir=str(store))
    held.acquire()
    assert held.holder() is not None
    blocker = sqlite3.connect(str(store / "waitfor.sqlite3"), isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with lock:
            pass  # the stall is noticed here
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    held.release()
    time.sleep(0.2)
    with lock:
        assert lock.holder() is not None  # published again
    assert held.holder() is None  # the stale row is gone
    err = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(err) == 2 and "stayed locked" in err[0] and "answers again" in err[1], err


def test_report_merge_locks_leave_nothing_behind(
        tmp_path: Path, default_store_env: Callable[[Path], None]) -> None:
    """One lock file per report path would pile up in the per-user directory
    (every test run makes new paths): the holder removes it before unlocking."""
    default_store_env(tmp_path)
    private = tmp_path / f"lockwise-{os.geteuid()}"
    writers = [_jsonreport.JsonWriter(str(tmp_path / f"r{i}.json"), fresh=True,
                                      source=lambda: [FINDING]) for i in range(3)]
    for writer in writers:
        writer.flush()
        writer.flush()
    assert sorted(p.name for p in private.iterdir()) == []
    done: list[int] = []

    def merge_many() -> None:
        other = _jsonreport.JsonWriter(str(tmp_path / "r0.json"), fresh=False,
                                       source=lambda: [FINDING])
        for _ in range(50):
            other.flush()
        done.append(1)

    threads = [threading.Thread(target=merge_many, daemon=True) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(done) == 3
    assert list(private.iterdir()) == []


def test_lockwise_run_with_a_refused_per_user_dir_says_so_once(tmp_path: Path) -> None:
    planted = tmp_path / f"lockwise-{os.geteuid()}"
    planted.mkdir()
    planted.chmod(0o777)
    (tmp_path / "prog.py").write_text(
        "import os, lockwise\n"
        "with lockwise.FileLock('a.lock'):\n"
        "    print(os.path.dirname(os.environ['LOCKWISE_JSON']))\n")
    env = clean_env(TMPDIR=str(tmp_path))
    env.pop("XDG_RUNTIME_DIR", None)
    result = lockwise_cmd("run", "prog.py", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path)  # the temporary report went elsewhere
    warned = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warned) == 1 and "writable by group or others" in warned[0], result.stderr
    assert list(planted.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.lock", planted.name, "prog.py"]
