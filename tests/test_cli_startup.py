"""``lockwise run`` starts lean: its own option parser agrees with argparse,
and the modules it no longer imports at start-up stay out."""

from __future__ import annotations

from ast import literal_eval
from pathlib import Path

import pytest

from lockwise.__main__ import _quick_run_namespace, _split_run_args, build_parser

from .runner_helpers import lockwise, python

FIELDS = ("json", "hang_timeout", "fail_on", "quiet", "profile", "profile_sample",
          "profile_collapsed", "module", "script")

PLAIN = [
    ["x.py"], ["x.py", "--json", "program-arg"], ["--quiet", "x.py"],
    ["--json", "r.json", "x.py"], ["--json=r.json", "x.py"],
    ["--hang-timeout", "2", "--fail-on", "all", "x.py"],
    ["--profile", "--profile-sample", "10", "x.py"], ["--profile-collapsed=c.txt", "x.py"],
    ["-m", "pkg.mod"], ["-mpkg", "arg"], ["--quiet", "-m", "pkg", "--quiet"],
    ["--", "x.py"], ["--json", "a", "--json", "b", "x.py"], ["--fail-on=none", "--", "x.py"],
    [], ["--quiet"],
]
LEFT_TO_ARGPARSE = [
    ["--json"], ["--json", "-x", "x.py"], ["-m"], ["--help"], ["-h", "x.py"],
    ["--hang-timeout", "-1", "x.py"], ["--", "-x.py"], ["--", "--"],
]


@pytest.mark.parametrize("argv", PLAIN)
def test_quick_parse_matches_argparse(argv: list[str]) -> None:
    mine, _program = _split_run_args(argv)
    quick = _quick_run_namespace(mine)
    assert quick is not None
    parsed = build_parser().parse_args(["run", *mine])
    assert {f: getattr(quick, f) for f in FIELDS} == {f: getattr(parsed, f) for f in FIELDS}


@pytest.mark.parametrize("argv", LEFT_TO_ARGPARSE)
def test_unusual_spellings_go_to_argparse(argv: list[str]) -> None:
    mine, _program = _split_run_args(argv)
    assert _quick_run_namespace(mine) is None


def test_quick_parse_errors_still_come_from_argparse(tmp_path: Path) -> None:
    result = lockwise("run", "--json", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "lockwise run: error: argument --json: expected one argument "
        "(see 'lockwise run --help')"]


def test_start_up_does_not_import_what_it_does_not_use(tmp_path: Path) -> None:
    heavy = ("typing", "argparse", "logging", "shutil", "signal", "tokenize")
    probe = f"import sys\nprint(sorted(m for m in {heavy!r} if m in sys.modules))\n"
    (tmp_path / "probe.py").write_text(probe)
    result = lockwise("run", "probe.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # What python -m and the import system load by themselves (on 3.9,
    # importlib.util imports typing and linecache imports tokenize) is not ours.
    own = python("-c", "import runpy, linecache, importlib.util, importlib.machinery\n" + probe)
    assert own.returncode == 0, own.stderr
    assert set(literal_eval(result.stdout)) <= set(literal_eval(own.stdout))
