"""``lockwise report`` on malformed reports: one line and status 2, never a
traceback, and linear time (issue 14, section 2). A hypothesis fuzz mutates
and truncates a real report (from ``examples/``: a deadlock, a lock-order
inversion, a hang and a contention profile) within a fixed budget."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lockwise.__main__ import main

BASE = json.loads((Path(__file__).parent / "report_base.json").read_text())
FUZZ = settings(max_examples=300, deadline=timedelta(seconds=5), derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def run_report(text: str, html: bool) -> tuple[int, str, str]:
    """``lockwise report`` on a file holding ``text``: (status, stdout, stderr)."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "r.json")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        args = ["report", path] + (["--html", os.path.join(d, "r.html")] if html else [])
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(args)
        return status, out.getvalue(), err.getvalue()


def check_outcome(text: str, html: bool) -> None:
    status, _out, err = run_report(text, html)
    if status == 0:
        return
    assert status == 2, (status, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("lockwise: error: "), err
    assert "please report" not in err, err  # the renderer's last-resort guard


def test_the_base_report_renders() -> None:
    for html in (False, True):
        status, out, err = run_report(json.dumps(BASE), html)
        assert status == 0, err
    assert "deadlock" in run_report(json.dumps(BASE), False)[1]


# ---------------------------------------------------------------- mutations

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12)


def _containers(doc: Any) -> list[Any]:
    """Every list and object of ``doc`` (iteratively: no deep recursion)."""
    found, todo = [], [doc]
    while todo:
        node = todo.pop()
        found.append(node)
        children = node.values() if isinstance(node, dict) else node
        todo.extend(c for c in children if isinstance(c, (dict, list)))
    return found


@st.composite
def mutated(draw: Callable[..., Any]) -> str:
    doc = copy.deepcopy(BASE)
    if draw(st.booleans()):  # render from the details, not from the saved text
        for finding in doc["findings"]:
            finding.pop("text", None)
    for _ in range(draw(st.integers(1, 4))):
        places = _containers(doc)
        node = places[draw(st.integers(0, len(places) - 1))]
        if isinstance(node, dict):
            if not node:
                continue
            key = draw(st.sampled_from(sorted(node)))
            action = draw(st.sampled_from(["replace", "delete", "wrap"]))
            if action == "replace":
                node[key] = draw(json_values)
            elif action == "delete":
                del node[key]
            else:
                node[key] = [node[key]]
        elif node:
            i = draw(st.integers(0, len(node) - 1))
            action = draw(st.sampled_from(["replace", "delete", "duplicate"]))
            if action == "replace":
                node[i] = draw(json_values)
            elif action == "delete":
                del node[i]
            else:
                node.append(copy.deepcopy(node[i]))
    text = json.dumps(doc)
    if draw(st.booleans()):
        text = text[:draw(st.integers(0, len(text)))]
    return text


@FUZZ
@given(text=mutated())
def test_fuzz_text_report(text: str) -> None:
    check_outcome(text, html=False)


@FUZZ
@given(text=mutated())
def test_fuzz_html_report(text: str) -> None:
    check_outcome(text, html=True)


@pytest.mark.parametrize("text, problem", [
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"findings": [' + "[" * 50_000 + "]" * 50_000 + "]}", "nested too deeply"),
    ('{"findings": [{"kind": "deadlock", "details": {"threads": [{"thread": "T", '
     '"holds": "nope"}]}}]}', "findings[0].details.threads[0].holds: expected a list"),
    ('{"findings": [{"kind": "deadlock", "details": "x"}]}', "findings[0].details"),
    ('{"findings": [{"kind": "lock-order", "details": {"cycle": [{"to": {"name": "b"}, '
     '"thread": "T", "first_stack": [], "second_stack": []}]}}]}', "missing 'from'"),
    ('{"findings": [], "profile": {"locks": [{"name": "a", "wait_total_ns": "slow"}]}}',
     "profile.locks[0].wait_total_ns: expected a number"),
    ('{"findings": [], "profile": {"timeline": {"locks": [{"threads": [{"events": '
     '[["hold", "0", 5]]}]}]}}}', "events[0][1]: expected a number"),
    ('{"findings": [], "profile": {"sample": Infinity}}', "finite"),
    ('{"findings": [{"kind": "hang", "details": {"table": [{"waiters": [1]}]}}]}',
     "table[0].waiters[0]: expected a string"),
])
@pytest.mark.parametrize("html", [False, True])
def test_known_bad_reports(text: str, problem: str, html: bool) -> None:
    status, out, err = run_report(text, html)
    assert status == 2 and out == "", err
    lines = err.splitlines()
    assert len(lines) == 1 and problem in lines[0], err


@pytest.mark.parametrize("html", [False, True])
def test_large_reports_render_in_linear_time(html: bool) -> None:
    """A lock-order cycle of 20,000 locks, a deadlock of 20,000 threads and
    100,000 timeline events: seconds, not the hours a quadratic step takes."""
    n = 20_000
    lock = [{"name": f"L{i}", "site": f"x.py:{i}"} for i in range(n)]
    cycle = [{"from": lock[i], "to": lock[(i + 1) % n], "thread": f"T{i}",
              "first_stack": [], "second_stack": []} for i in range(n)]
    threads = [{"thread": f"T{i}", "holds": [{"lock": lock[i], "acquired_at": "x.py:1"}],
                "waits_for": {"kind": "lock", "lock": lock[(i + 1) % n], "held_by": f"T{i+1}"}}
               for i in range(n)]
    events = [["hold", i * 10, i * 10 + 5] for i in range(100_000)]
    doc = {"findings": [
        {"kind": "lock-order", "summary": "big", "locks": lock, "details": {"cycle": cycle}},
        {"kind": "deadlock", "summary": "big", "details": {"threads": threads}}],
        "profile": {"timeline": {"locks": [{"name": "L0", "threads": [
            {"thread": "T0", "events": events}]}]}}}
    start = time.monotonic()
    status, _out, err = run_report(json.dumps(doc), html)
    assert status == 0, err
    assert time.monotonic() - start < 20
