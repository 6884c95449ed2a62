"""Growth: sites of generated code are freed with their code; the JSON report
is written off the detecting thread, batched, and complete on disk at exit or
shortly after a finding even under kill -9."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import pytest

import lockwise
from lockwise import Finding, LockRef, _jsonreport, _sites
from lockwise._jsonreport import JsonWriter, load

from .runner_helpers import clean_env

pytestmark = pytest.mark.timeout(120)

#: n distinct lock-order inversions, each from its own generated code (so
#: each has its own creation sites: a distinct problem, not a repeat).
INVERSIONS = """
import sys, time, lockwise
n = int(sys.argv[1])
SRC = ("a = lockwise.Lock()\\nb = lockwise.Lock()\\n"
       "with a:\\n  with b:\\n    pass\\nwith b:\\n  with a:\\n    pass\\n")
start = time.monotonic()
for i in range(n):
    exec(compile(f"_ = {i}\\n" + SRC, f"<generated {i}>", "exec"), {"lockwise": lockwise})
print(f"took {time.monotonic() - start:.3f}", flush=True)
if len(sys.argv) > 2:
    time.sleep(float(sys.argv[2]))
"""


def run(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    prog = tmp_path / "prog.py"
    prog.write_text(INVERSIONS)
    return subprocess.Popen([sys.executable, "-m", "lockwise", "run", "--quiet", "--json",
                             str(tmp_path / "r.json"), str(prog), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=clean_env())


def _finding(i: int) -> Finding:
    return Finding(kind="lock-order", summary=f"inversion {i}", threads=["T"],
                   locks=[LockRef("a", f"gen{i}.py:1")], pid=os.getpid(), time=float(i))


def test_many_findings_are_batched_off_the_recording_thread(tmp_path: Path) -> None:
    items: list[Finding] = []
    writer = JsonWriter(str(tmp_path / "r.json"), fresh=True, source=lambda: list(items))
    merges: list[int] = []
    merge = writer._merge

    def counting(mine: Any, extra: Any) -> None:
        merges.append(threading.get_ident())
        time.sleep(0.002)  # a report of some size
        merge(mine, extra)

    writer._merge = counting  # type: ignore[method-assign]
    start = time.monotonic()
    for i in range(400):
        items.append(_finding(i))
        writer(items[-1])
    recording = time.monotonic() - start
    assert threading.get_ident() not in merges  # never in the recording thread
    assert recording < 1.0  # each call only wakes the writer
    writer.finish()
    assert len(load(writer.path)) == 400
    assert len(merges) < 100, len(merges)  # batched: not one merge per finding


def test_800_inversions_are_fast_and_all_on_disk_at_exit(tmp_path: Path) -> None:
    proc = run(tmp_path, "800")
    out, err = proc.communicate(timeout=100)
    assert proc.returncode == 0, err
    took = float(re.search(r"took ([\d.]+)", out).group(1))  # type: ignore[union-attr]
    assert took < 20, took  # was 191 s: one full rewrite per finding
    findings = json.loads((tmp_path / "r.json").read_text())["findings"]
    assert len(findings) == 800
    assert len({f["summary"] for f in findings}) == 800


@pytest.mark.parametrize("count", ["1", "300"])
def test_kill_9_shortly_after_findings_leaves_them_in_the_report(tmp_path: Path,
                                                                 count: str) -> None:
    proc = run(tmp_path, count, "60")
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the program made its findings
        assert line.startswith("took"), proc.stderr.read() if proc.stderr else ""
        # Within the writer's pause: 4x one write, which for hundreds of
        # findings on a loaded 2-core runner is a few hundred milliseconds.
        time.sleep(0.3 if count == "1" else 1.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)
    assert len(load(str(tmp_path / "r.json"))) == int(count)


def test_kill_9_while_findings_pour_in_leaves_a_valid_report(tmp_path: Path) -> None:
    proc = run(tmp_path, "100000")
    try:
        deadline = time.monotonic() + 30
        path = tmp_path / "r.json"
        while time.monotonic() < deadline:  # until some findings are written
            try:
                if len(json.loads(path.read_text())["findings"]) >= 20:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)
    assert len(load(str(tmp_path / "r.json"))) >= 20  # complete and valid JSON


def test_fork_child_writer_starts_its_own_thread(tmp_path: Path) -> None:
    items = [_finding(0)]
    writer = JsonWriter(str(tmp_path / "r.json"), fresh=True, source=lambda: list(items))
    writer(items[0])
    writer.finish()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            items.append(_finding(1))
            writer(items[1])
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if len(_jsonreport.load(writer.path)) == 2:
                    code = 0
                    break
                time.sleep(0.01)
        finally:
            os._exit(code)
    _pid, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


# ---------------------------------------------------------------- generated code


def _factory(i: int, filename: str = "<factory>") -> Any:
    """A function made by exec, as namedtuple and dataclass make them."""
    ns: dict[str, Any] = {"Lock": lockwise.Lock}
    exec(compile(f"def make():\n    x = {i}\n    return Lock()\n", filename, "exec"), ns)
    return ns["make"]


def _plain_code_is_freed() -> bool:
    """Does this interpreter free a generated function's code object at all?
    (Free-threaded 3.13 makes code objects immortal once a second thread has
    started, lockwise or not.)"""
    import gc

    ns: dict[str, Any] = {}
    exec(compile("def probe():\n    return 1\n", "<probe>", "exec"), ns)
    ref = weakref.ref(ns["probe"].__code__)
    del ns
    gc.collect()
    return ref() is None


def test_generated_sites_do_not_keep_their_code() -> None:
    if not _plain_code_is_freed():
        pytest.skip("this interpreter keeps generated code objects alive without lockwise too")
    before = (len(_sites._sites), len(_sites._by_offset), len(getattr(_sites, "_generated", ())))
    refs = []
    for i in range(2000):
        make = _factory(i)
        make()
        refs.append(weakref.ref(make.__code__))
        del make
    import gc

    gc.collect()
    assert not any(r() is not None for r in refs)  # freed, as under plain Python
    after = (len(_sites._sites), len(_sites._by_offset), len(getattr(_sites, "_generated", ())))
    assert after[0] == before[0] and after[1] == before[1]
    assert after[2] <= before[2] + 5


def test_generated_functions_keep_distinct_sites_while_alive() -> None:
    one, two = _factory(1), _factory(1)  # same text, same file name
    a, b = one(), two()
    assert a._site is not b._site  # two classes of lock, as two files would be
    assert one()._site is a._site  # one class per creation line
    site = a._site
    del one
    import gc

    gc.collect()
    assert a._site is site and str(site) == "<factory>:3"  # a lock keeps its site


GENERATED = textwrap.dedent("""
    import gc, sys
    import lockwise, threading
    Lock = threading.Lock if sys.argv[2] == "plain" else lockwise.Lock
    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096
    def make(i):
        ns = {"Lock": Lock}
        exec(compile(f"_ = {i}\\ndef f():\\n    return Lock()\\nl = f()\\n",
                     f"<generated {i}>", "exec"), ns)
    for i in range(2000):
        make(i)
    gc.collect()
    before = rss()
    for i in range(2000, 2000 + int(sys.argv[1])):
        make(i)
    gc.collect()
    print(rss() - before)
""")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc (Linux)")
def test_generated_sites_memory_is_bounded(tmp_path: Path) -> None:
    prog = tmp_path / "gen.py"
    prog.write_text(GENERATED)
    growth = {}
    for mode in ("lockwise", "plain"):
        done = subprocess.run([sys.executable, str(prog), "30000", mode], capture_output=True,
                              text=True, timeout=100, env=clean_env())
        assert done.returncode == 0, done.stderr
        growth[mode] = int(done.stdout.split()[-1])
    # Was +20 MB for 30,000 sites (+190 MB for 60,000 larger ones): the sites
    # and their code objects were kept for good.
    assert growth["lockwise"] - growth["plain"] < 6_000_000, growth
