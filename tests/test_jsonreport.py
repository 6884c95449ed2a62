"""JSON reports: loading with one-line errors, atomic writes, merging across writers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lockwise import Finding, LockRef
from lockwise._jsonreport import JsonWriter, ReportError, load


def _finding(summary: str, pid: int) -> Finding:
    return Finding(kind="lock-order", summary=summary, threads=["T"],
                   locks=[LockRef("a", "x.py:1")], pid=pid, time=1.0)


@pytest.mark.parametrize("content, message", [
    (None, "no such report file"),
    ("{nope", "invalid JSON"),
    ("[1, 2]", "expected an object with a 'findings' list"),
    ('{"findings": [{"summary": "no kind"}]}', "findings[0]: missing 'kind'"),
])
def test_load_errors_are_one_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "r.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ReportError) as info:
        load(str(path))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_writers_merge_and_never_drop(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    parent_findings = [_finding("parent", 1)]
    child_findings = [_finding("child", 2)]
    parent = JsonWriter(str(path), fresh=True, source=lambda: list(parent_findings))
    assert json.loads(path.read_text()) == {"format": 1, "findings": []}
    child = JsonWriter(str(path), fresh=False, source=lambda: list(child_findings))
    parent.flush()
    child.flush()
    parent_findings.append(_finding("parent again", 1))
    parent.flush()
    summaries = [f.summary for f in load(str(path))]
    assert summaries == ["parent", "child", "parent again"]
    assert os.listdir(tmp_path) == ["r.json"]  # no temporary file left


def test_a_writer_knows_when_another_process_wrote(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    parent = JsonWriter(str(path), fresh=True, source=lambda: [_finding("parent", 1)])
    assert not parent.written_by_others()
    parent.flush()
    assert not parent.written_by_others()  # its own writes do not count
    child = JsonWriter(str(path), fresh=False, source=lambda: [_finding("child", 2)])
    child.flush()
    assert parent.written_by_others()
    parent.flush()
    assert not parent.written_by_others()


def test_reentrant_flush_does_not_deadlock(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    items = [_finding("one", 1)]
    calls = []
    writer: JsonWriter

    def source() -> list[Finding]:
        calls.append(1)
        if len(calls) == 1:  # as if a signal handler recorded a finding mid-write
            items.append(_finding("two", 1))
            writer.flush()
        return list(items)

    writer = JsonWriter(str(path), fresh=True, source=source)
    writer.flush()
    assert [f.summary for f in load(str(path))] == ["one", "two"]


def test_roundtrip_keeps_fields(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    f = _finding("s", 7)
    writer = JsonWriter(str(path), fresh=True, source=lambda: [f])
    writer.flush()
    [back] = load(str(path))
    assert back.to_dict() == f.to_dict()
