"""CPython's own threading, queue, logging and concurrent.futures suites under ``lockwise run``.

The quality bar of the runner: these suites, run in-process under
``lockwise run -m test``, give the same result test by test as under plain
``python -m test``, and lockwise records no ``deadlock`` or ``lock-order``
finding. The differences that must remain are listed in ``EXPECTED`` (and
explained in docs/stdlib-suites.md).

Slow (a few minutes per Python): deselected by default, run with
``python -m pytest -m stdlib_suites tests/test_stdlib_suites.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Optional

import pytest

from .runner_helpers import clean_env

pytestmark = pytest.mark.stdlib_suites

pytest.importorskip("test.libregrtest", reason="this Python ships no test suite")

SUITES = ["test_threading", "test_queue", "test_logging", "test_concurrent_futures"]
#: A bounded subset: all of threading, queue and logging; the thread-pool and
#: Future tests of concurrent.futures (its process-pool tests take minutes and
#: exercise multiprocessing more than threading; see the docs for a full run).
MATCH = ["test.test_threading.*", "test.test_queue.*", "test.test_logging.*",
         "*ThreadPool*", "FutureTests"]

#: test id -> (why it differs, the Python versions where it does).
EXPECTED: dict[str, tuple[str, tuple[int, int]]] = {
    "test.test_threading.MiscTestCase.test__all__": (
        "threading.Lock/RLock/Condition/Semaphore/BoundedSemaphore are lockwise's "
        "(__module__ 'lockwise...'), so check__all__ no longer counts them as threading's",
        (3, 9)),
    "test.test_threading.ThreadTests.test_import_from_another_thread": (
        "the subprocess is covered by the activation .pth, which imports threading "
        "before the script checks that it is not imported", (3, 9)),
}

#: One regrtest run of the subset may take this long (seconds).
RUN_TIMEOUT = 420


def expected_differences() -> dict[str, str]:
    return {test: why for test, (why, since) in EXPECTED.items() if sys.version_info >= since}


def outcomes(junit: Path) -> dict[str, str]:
    """test id -> ok / skip / FAIL / ERROR, from regrtest's --junit-xml.

    A test with a failing subtest has no entry of its own: compare by presence.
    """
    found: dict[str, str] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = case.get("name")
        if not name:
            continue
        tags = {child.tag for child in case}
        if "failure" in tags:
            found[name] = "FAIL"
        elif "error" in tags:
            found[name] = "ERROR"
        elif "skipped" in tags or case.get("status") == "skipped":
            found[name] = "skip"
        else:
            found[name] = "ok"
    return found


def regrtest(tmp: Path, label: str, match: list[str], lockwise: bool,
             suites: Optional[list[str]] = None) -> tuple[dict[str, str], list[dict[str, object]]]:
    """Run the suites; their outcomes and (under lockwise) the findings."""
    junit = tmp / f"{label}.xml"
    report = tmp / f"{label}.json"
    args = ["-m", "test", "--timeout", "300", "--junit-xml", str(junit)]
    for pattern in match:
        args += ["-m", pattern]
    args += suites or SUITES
    if lockwise:
        args = ["-m", "lockwise", "run", "--json", str(report),
                "--fail-on", "deadlock,lock-order,fork-hazard"] + args
    work = tmp / label
    work.mkdir()
    result = subprocess.run([sys.executable, *args], cwd=work, capture_output=True, text=True,
                            timeout=RUN_TIMEOUT, env=clean_env())
    (tmp / f"{label}.log").write_text(result.stdout + result.stderr)
    assert junit.exists(), f"{label}: no junit report (status {result.returncode}):\n" \
                           + (result.stdout + result.stderr)[-3000:]
    assert result.returncode != 3, f"{label}: lockwise recorded a deadlock or lock-order " \
                                   "finding:\n" + result.stderr[-5000:]
    findings: list[dict[str, object]] = []
    if lockwise:
        findings = json.loads(report.read_text())["findings"]
    return outcomes(junit), findings


def differences(plain: dict[str, str], lw: dict[str, str]) -> dict[str, tuple[str, str]]:
    return {test: (plain.get(test, "missing"), lw.get(test, "missing"))
            for test in sorted(set(plain) | set(lw)) if plain.get(test) != lw.get(test)}


@pytest.mark.timeout(3 * RUN_TIMEOUT)
def test_stdlib_suites_same_results_under_lockwise(tmp_path: Path) -> None:
    plain, _ = regrtest(tmp_path, "plain", MATCH, lockwise=False)
    lw, findings = regrtest(tmp_path, "lockwise", MATCH, lockwise=True)
    assert len(plain) > 400, "the subset did not run"
    bad = [f for f in findings if f.get("kind") in ("deadlock", "lock-order", "fork-hazard")]
    assert not bad, json.dumps(bad, indent=1)[:5000]

    expected = expected_differences()
    unexpected = {t: d for t, d in differences(plain, lw).items() if t not in expected}
    if unexpected:
        # Timing-sensitive tests on a loaded machine: run the differing ones
        # again, alone, both ways, before calling it a difference.
        again_plain, _ = regrtest(tmp_path, "plain-again", list(unexpected), lockwise=False)
        again_lw, findings = regrtest(tmp_path, "lockwise-again", list(unexpected),
                                      lockwise=True)
        assert not [f for f in findings
                    if f.get("kind") in ("deadlock", "lock-order", "fork-hazard")]
        unexpected = {t: d for t, d in differences(again_plain, again_lw).items()
                      if t in unexpected}
    assert not unexpected, (
        "tests that differ under lockwise (plain -> lockwise); explain them in "
        f"EXPECTED and docs/stdlib-suites.md or fix lockwise: {unexpected}")


#: CPython's asyncio suites that exercise locks, queues, task groups, timeouts,
#: wait_for and tasks: the asyncio half of the bar (issue 19).
ASYNCIO_SUITES = ["test_asyncio.test_locks", "test_asyncio.test_queues",
                  "test_asyncio.test_taskgroups", "test_asyncio.test_timeouts",
                  "test_asyncio.test_waitfor", "test_asyncio.test_tasks"]


@pytest.mark.timeout(3 * RUN_TIMEOUT)
def test_asyncio_suites_pass_under_lockwise_with_no_finding(tmp_path: Path) -> None:
    present = [s for s in ASYNCIO_SUITES
               if (Path(sys.modules["test"].__file__ or "").parent
                   / s.replace(".", "/")).with_suffix(".py").exists()]
    if not present:
        pytest.skip("this Python ships none of the asyncio suites")
    lw, findings = regrtest(tmp_path, "asyncio", [], lockwise=True, suites=present)
    assert len(lw) > 300, "the suites did not run"
    assert not [f for f in findings if f.get("kind") in ("deadlock", "lock-order", "hang")]
    failed = {t: r for t, r in lw.items() if r in ("FAIL", "ERROR")}
    assert not failed, failed


#: The multiprocessing synchronization and pool tests, with the fork and spawn
#: start methods (issue 16): lockwise in the parent and, through the
#: environment, in every child; a few minutes each way.
MP_SUITES = ["test_multiprocessing_fork", "test_multiprocessing_spawn"]
MP_MATCH = ["*TestLock*", "*TestCondition*", "*TestSemaphore*", "*TestEvent*", "*TestPool.*",
            "*TestBarrier*"]


@pytest.mark.timeout(3 * RUN_TIMEOUT)
def test_multiprocessing_subset_same_results_under_lockwise(tmp_path: Path) -> None:
    base = Path(sys.modules["test"].__file__ or "").parent
    present = [s for s in MP_SUITES if (base / s).exists() or (base / f"{s}.py").exists()]
    if not present:
        pytest.skip("this Python ships no multiprocessing suites")
    plain, _ = regrtest(tmp_path, "mp-plain", MP_MATCH, lockwise=False, suites=present)
    lw, findings = regrtest(tmp_path, "mp-lockwise", MP_MATCH, lockwise=True, suites=present)
    assert len(plain) > 100, "the subset did not run"
    bad = [f for f in findings if f.get("kind") in ("deadlock", "lock-order", "fork-hazard")]
    assert not bad, json.dumps(bad, indent=1)[:5000]
    unexpected = differences(plain, lw)
    if unexpected:  # timing-sensitive tests on a loaded machine: once more, alone
        again_plain, _ = regrtest(tmp_path, "mp-plain-again", list(unexpected),
                                  lockwise=False, suites=present)
        again_lw, _ = regrtest(tmp_path, "mp-lockwise-again", list(unexpected),
                               lockwise=True, suites=present)
        unexpected = {t: d for t, d in differences(again_plain, again_lw).items()
                      if t in unexpected}
    assert not unexpected, f"tests that differ under lockwise (plain -> lockwise): {unexpected}"


#: CPython's own tests of the import machinery's module locks and of imports
#: from many threads (circular imports resolved by CPython's deadlock check,
#: imports that start threads): lockwise sees these waits (``_imports``) and
#: must report none of them.
IMPORT_SUITES = ["test_importlib.test_locks", "test_importlib.test_threaded_import"]


@pytest.mark.timeout(3 * RUN_TIMEOUT)
def test_import_lock_suites_pass_under_lockwise_with_no_finding(tmp_path: Path) -> None:
    present = [s for s in IMPORT_SUITES
               if (Path(sys.modules["test"].__file__ or "").parent
                   / s.replace(".", "/")).with_suffix(".py").exists()]
    if not present:
        pytest.skip("this Python ships none of the import-lock suites")
    plain, _ = regrtest(tmp_path, "imports-plain", [], lockwise=False, suites=present)
    lw, findings = regrtest(tmp_path, "imports", [], lockwise=True, suites=present)
    assert len(lw) > 20, "the suites did not run"
    assert not [f for f in findings if f.get("kind") in ("deadlock", "lock-order", "hang")]
    assert differences(plain, lw) == {}
