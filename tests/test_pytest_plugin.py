"""The pytest plugin, run in a subprocess pytest (pytester)."""

from __future__ import annotations

import pytest

DEADLOCK_TEST = """
import threading

def test_deadlock():
    a, b = threading.Lock(), threading.Lock()
    barrier = threading.Barrier(2)
    def worker(first, second):
        try:
            with first:
                barrier.wait(timeout=10)
                with second:
                    pass
        except Exception:
            pass
    threads = [threading.Thread(target=worker, args=(a, b)),
               threading.Thread(target=worker, args=(b, a))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)

def test_fine():
    with threading.Lock():
        pass
"""

INVERSION_TEST = """
import threading

def test_inversion(lockwise_findings):
    a, b = threading.Lock(), threading.Lock()
    with a:
        with b:
            pass
    with b:
        with a:
            pass
    assert [f.kind for f in lockwise_findings] == ["lock-order"]

def test_after(lockwise_findings):
    assert lockwise_findings == []
"""


def test_inert_without_option(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import threading
        import lockwise
        def test_plain():
            assert not lockwise.is_installed()
            assert threading.Lock.__module__ == "_thread"
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_deadlock_fails_the_test_with_report(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(DEADLOCK_TEST)
    result = pytester.runpytest_subprocess("--lockwise", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*lockwise: deadlock:*wait for each other in a cycle*",
                                 "*FAILED*test_deadlock*"])
    assert "lockwise: installed" in result.stdout.str()


def test_ini_option_enables(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nlockwise = true\n")
    pytester.makepyfile(DEADLOCK_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)


def test_fixture_and_fail_on(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(INVERSION_TEST)
    default = pytester.runpytest_subprocess("--lockwise", "-p", "no:cacheprovider")
    default.assert_outcomes(passed=2, warnings=1)
    strict = pytester.runpytest_subprocess("--lockwise", "--lockwise-fail-on",
                                           "deadlock,lock-order", "-p", "no:cacheprovider")
    strict.assert_outcomes(passed=1, failed=1, warnings=1)
    strict.stdout.fnmatch_lines(["*lockwise: potential deadlock: lock-order inversion*"])


def test_bad_fail_on_is_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest_subprocess("--lockwise", "--lockwise-fail-on", "oops")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown finding kind 'oops'*"])
