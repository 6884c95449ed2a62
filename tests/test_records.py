"""Plain data records (findings, snapshots) and small helpers they rely on."""

from __future__ import annotations

import copy
import os
import pickle
import stat
import sys
from pathlib import Path

import pytest

import lockwise
from lockwise import FrameInfo, LockRef, StackInfo, _files
from lockwise._findings import Finding


def test_frozen_records_hash_compare_and_refuse_changes() -> None:
    a = FrameInfo("app.py", 3, "main", "x = 1")
    assert a == FrameInfo("app.py", 3, "main", "x = 1") and a != FrameInfo("app.py", 4, "main")
    assert len({a, FrameInfo("app.py", 3, "main", "x = 1"), LockRef("l", "app.py:1")}) == 2
    assert repr(LockRef("l", "app.py:1")) == "LockRef(name='l', site='app.py:1', type='Lock')"
    with pytest.raises(AttributeError):
        a.lineno = 4  # type: ignore[misc]
    for clone in (pickle.loads(pickle.dumps(a)), copy.deepcopy(a)):
        assert clone == a and clone is not a


def test_findings_compare_by_fields_and_default_time_and_pid() -> None:
    stack = StackInfo("T1", "blocked here", [FrameInfo("app.py", 3, "main")])
    one = Finding("deadlock", "s", ["T1"], [LockRef("l", "app.py:1")], [stack], time=1.0)
    assert one == Finding.from_dict(one.to_dict())
    assert one != Finding.from_dict({**one.to_dict(), "summary": "other"})
    fresh = Finding("hang", "s", [], [])
    assert fresh.pid == os.getpid() and fresh.time > 0 and fresh.stacks == []
    with pytest.raises(TypeError):
        hash(one)  # mutable, as a dataclass


def test_with_condition_records_the_callers_line() -> None:
    cond = lockwise.Condition(lockwise.Lock())
    line = sys._getframe().f_lineno + 1
    with cond:
        assert cond._lock.acquired_at == f"{__file__}:{line}"
        assert cond._is_owned()
    assert not cond._lock.locked()


def test_make_temp_is_private_and_unique(tmp_path: Path) -> None:
    made = [_files.make_temp(str(tmp_path), "x-", ".json") for _ in range(50)]
    for fd, _path in made:
        os.close(fd)
    paths = {path for _fd, path in made}
    assert len(paths) == 50 and all(p.endswith(".json") for p in paths)
    assert all(stat.S_IMODE(os.stat(p).st_mode) == 0o600 for p in paths)
