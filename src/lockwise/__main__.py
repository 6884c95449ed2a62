"""The ``lockwise`` command (also ``python -m lockwise``).

``lockwise run [options] script.py [args...]`` / ``lockwise run [options] -m module [args...]``
runs a program with lockwise installed; ``lockwise report FILE.json`` prints
the human report of a saved JSON report.

Each subcommand is built by its own ``add_*_parser(subparsers)`` function
and sets ``func`` (taking the parsed namespace, returning the exit status),
so new subcommands or options (``report --html``) plug in there.
Bad input gets one line on stderr and exit status 2.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

TYPE_CHECKING = False  # True for type checkers: typing is not imported at run time
if TYPE_CHECKING:
    import argparse
    from typing import Any, NoReturn, Optional

USAGE_STATUS = 2
_VALUE_OPTIONS = ("--json", "--hang-timeout", "--fail-on", "--profile-sample",
                  "--profile-collapsed")
_FLAG_OPTIONS = ("--quiet", "--verbose", "--profile", "-h", "--help")


def add_run_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "run", help="run a Python program with lockwise installed",
        usage="lockwise run [options] (script.py | -m module) [args...]",
        description="Run a program with lockwise installed before its first line. "
                    "Options must come before the script or -m module; everything "
                    "after it is passed to the program.")
    parser.add_argument("--json", metavar="FILE",
                        help="keep a JSON report in FILE, rewritten at every finding "
                             "(findings of subprocesses and forked children included)")
    parser.add_argument("--hang-timeout", metavar="SECONDS",
                        help="report a 'hang' when a thread stays blocked on a lock, "
                             "condition, queue or join for longer than SECONDS")
    parser.add_argument("--fail-on", metavar="KINDS", default="deadlock",
                        help="exit with status 3 when a finding of these kinds (comma "
                             "list of deadlock, lock-order, hang, contention, fork-hazard; "
                             "'all', "
                             "'none') is recorded (default: deadlock)")
    parser.add_argument("--quiet", action="store_true",
                        help="print no report on stderr (the JSON report is still written)")
    parser.add_argument("--verbose", action="store_true",
                        help="print each finding's full report on stderr (every stack, the "
                             "interleaving drawn) instead of the short one")
    parser.add_argument("--profile", action="store_true",
                        help="profile lock contention: print a table of the locks threads "
                             "waited for (wait and hold times, waiter and holder sites) at "
                             "the end, and keep it under 'profile' in the JSON report")
    parser.add_argument("--profile-sample", metavar="N",
                        help="with --profile (implied): time only one in N contentions, "
                             "leaving uncontended acquires at full speed; wait totals are "
                             "scaled by N and there are no hold times")
    parser.add_argument("--profile-collapsed", metavar="FILE",
                        help="with --profile (implied): write the waiting time as collapsed "
                             "stacks ('frame;frame;frame ns' lines) to FILE, for flame-graph "
                             "tools and speedscope")
    parser.add_argument("-m", dest="module", metavar="MODULE",
                        help="run a library module as a script, as python -m does")
    parser.add_argument("script", nargs="?", help="the Python script to run")
    parser.set_defaults(func=cmd_run, program_args=[])
    return parser


def add_report_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "report", help="print the human report of a saved JSON report",
        description="Print the human report of a JSON report written by "
                    "'lockwise run --json FILE', or write it as one HTML page.")
    parser.add_argument("file", metavar="FILE.json", help="the JSON report")
    parser.add_argument("--html", metavar="FILE",
                        help="write a self-contained HTML report to FILE instead (findings "
                             "and stacks, the lock-order graph, the contention table and a "
                             "timeline of holds and waits)")
    parser.set_defaults(func=cmd_report)
    return parser


_CONFIRM_VALUE_OPTIONS = ("--runs", "--timeout", "--json", "--from-report", "--replay",
                          "--finding", "--seed", "--pause")


def add_confirm_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "confirm", help="steer threads into a predicted lock-order deadlock",
        usage="lockwise confirm [options] (script.py | -m module) [args...]\n"
              "       lockwise confirm --replay FILE [--finding K] [--runs N]",
        description="Run the program once under lockwise to collect its lock-order "
                    "findings (or read them with --from-report), then re-run it with a "
                    "scheduler that pauses each thread of a predicted cycle before its "
                    "second acquire until the cycle forms. A finding is confirmed only "
                    "when lockwise's deadlock detector caught the deadlock; its schedule "
                    "can be replayed. Exit status 3 when a finding is confirmed (or a "
                    "replay reproduced it), 0 otherwise, 2 on bad input.")
    parser.add_argument("--runs", metavar="N", default=None,
                        help="directed runs per finding at most (default 5; --replay: 1)")
    parser.add_argument("--timeout", metavar="SECONDS", default=None,
                        help="kill a run after SECONDS (default 30); it counts as a run")
    parser.add_argument("--json", metavar="FILE",
                        help="write the findings with their 'confirmation' to FILE")
    parser.add_argument("--from-report", metavar="FILE",
                        help="take the lock-order findings from a JSON report of "
                             "'lockwise run --json' instead of a collecting run")
    parser.add_argument("--replay", metavar="FILE",
                        help="re-run the schedule of a confirmed finding in FILE (written "
                             "by 'lockwise confirm --json')")
    parser.add_argument("--finding", metavar="K",
                        help="with --replay: the K-th lock-order finding (default: the "
                             "first confirmed one)")
    parser.add_argument("--seed", metavar="N", default="0",
                        help="seed of the first directed run (run i uses N+i)")
    parser.add_argument("--pause", metavar="SECONDS", default=None,
                        help="bound of one pause (default 2)")
    parser.add_argument("-m", dest="module", metavar="MODULE",
                        help="run a library module as a script, as python -m does")
    parser.add_argument("script", nargs="?", help="the Python script to run")
    parser.set_defaults(func=cmd_confirm, program_args=[])
    return parser


def _split_confirm_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """``confirm``'s arguments split as ``run``'s are (lockwise's, the program's)."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("--", "-m"):
            return argv[:i + 2], argv[i + 2:]
        if arg.startswith("-m") and not arg.startswith("--"):
            return argv[:i + 1], argv[i + 1:]
        if arg in _CONFIRM_VALUE_OPTIONS:
            i += 2
            continue
        if arg.startswith("-"):
            i += 1
            continue
        return argv[:i + 1], argv[i + 1:]
    return argv, []


def _positive(text: Optional[str], option: str, default: float, integer: bool) -> float:
    from ._confirm import ConfirmError

    if text is None:
        return default
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        value = -1
    if not value > 0 or value != value or value == float("inf"):
        kind = "a positive whole number" if integer else "a positive number of seconds"
        raise ConfirmError(f"{option}: {text!r} is not valid; expected {kind}")
    return value


def cmd_confirm(ns: Any) -> int:
    from . import _confirm

    try:
        if ns.module is not None and ns.script is not None:
            ns.program_args.insert(0, ns.script)
            ns.script = None
        timeout = _positive(ns.timeout, "--timeout", _confirm.DEFAULT_TIMEOUT, False)
        pause = _positive(ns.pause, "--pause", _confirm.DEFAULT_PAUSE, False)
        try:
            seed = int(ns.seed)
        except ValueError:
            raise _confirm.ConfirmError(f"--seed: {ns.seed!r} is not valid; expected a "
                                        "whole number") from None
        if ns.replay is not None:
            if ns.module is not None or ns.script is not None:
                raise _confirm.ConfirmError("--replay: the schedule names the program; "
                                            "expected no script or -m module with it")
            runs = int(_positive(ns.runs, "--runs", 1, True))
            finding = (None if ns.finding is None
                       else int(_positive(ns.finding, "--finding", 1, True)))
            return _confirm.main_replay(ns.replay, finding, runs, timeout, sys.stdout)
        if ns.finding is not None:
            raise _confirm.ConfirmError("--finding: only with --replay FILE")
        runs = int(_positive(ns.runs, "--runs", _confirm.DEFAULT_RUNS, True))
        target = None
        if ns.module is not None:
            target = _confirm.Target(ns.module, ns.program_args, True)
        elif ns.script is not None:
            if not __import__("os").path.isfile(ns.script):
                raise _confirm.ConfirmError(f"confirm: cannot open {ns.script!r}: no such "
                                            "file; expected a Python script")
            target = _confirm.Target(ns.script, ns.program_args, False)
        return _confirm.main_confirm(target, runs, timeout, ns.json, ns.from_report, seed,
                                     pause, sys.stdout)
    except _confirm.ConfirmError as exc:
        sys.stderr.write(f"lockwise: error: {exc}\n")
        return USAGE_STATUS


def build_parser() -> argparse.ArgumentParser:
    # Imported here, not at the top: a plain `lockwise run` never needs it.
    import argparse

    class _Parser(argparse.ArgumentParser):
        """An ArgumentParser whose errors are one line: ``lockwise: error: ...``."""

        def error(self, message: str) -> NoReturn:
            self.exit(USAGE_STATUS,
                      f"{self.prog}: error: {message} (see '{self.prog} --help')\n")

    parser = _Parser(prog="lockwise",
                     description="lockwise: deadlock detection, lock-order checking and "
                                 "hang reports for Python threads.")
    parser.add_argument("--version", action="version", version=_version())
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND",
                                       parser_class=_Parser)
    add_run_parser(subparsers)
    add_report_parser(subparsers)
    add_confirm_parser(subparsers)
    return parser


def _version() -> str:
    from . import __version__

    return f"lockwise {__version__}"


class _BadOption(Exception):
    pass


def _split_run_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split ``run``'s arguments into (lockwise's, the program's).

    lockwise's options end at the script (first non-option argument), at
    ``-m MODULE`` or after ``--``; the rest belongs to the program.
    """
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return argv[:i + 2], argv[i + 2:]
        if arg == "-m":
            return argv[:i + 2], argv[i + 2:]
        if arg.startswith("-m") and not arg.startswith("--"):
            return argv[:i + 1], argv[i + 1:]
        if arg in _VALUE_OPTIONS:
            i += 2
            continue
        if arg.startswith("-"):
            name = arg.split("=", 1)[0]
            if name not in _VALUE_OPTIONS + _FLAG_OPTIONS:
                raise _BadOption(f"run: unknown option {arg!r}; expected --json FILE, "
                                 "--hang-timeout SECONDS, --fail-on KINDS, --quiet, --verbose, "
                                 "--profile, "
                                 "--profile-sample N, --profile-collapsed FILE or "
                                 "-m MODULE before the script")
            i += 1
            continue
        return argv[:i + 1], argv[i + 1:]
    return argv, []


def _quick_run_namespace(mine: list[str]) -> Optional[SimpleNamespace]:
    """``run``'s options, parsed as argparse would parse them, without argparse.

    argparse and what it imports (gettext, locale, shutil and the compression
    modules shutil probes) cost ~10 ms of every start, for a handful of
    options. Only the plain spellings are parsed here; anything else (help,
    a missing value, a value that starts with '-') returns None, and argparse
    parses it and words the error.
    """
    ns = SimpleNamespace(command="run", func=cmd_run, json=None, hang_timeout=None,
                         fail_on="deadlock", quiet=False, verbose=False, profile=False,
                         profile_sample=None, profile_collapsed=None, module=None, script=None,
                         program_args=[])
    i = 0
    while i < len(mine):
        arg = mine[i]
        last = i == len(mine) - 1
        if arg in ("--quiet", "--verbose", "--profile"):
            setattr(ns, arg[2:], True)
        elif arg.split("=", 1)[0] in _VALUE_OPTIONS:
            name, eq, value = arg.partition("=")
            if not eq:
                if last or mine[i + 1].startswith("-"):
                    return None
                i += 1
                value = mine[i]
            setattr(ns, name[2:].replace("-", "_"), value)
        elif arg == "-m" or (arg.startswith("-m") and not arg.startswith("--")):
            if arg == "-m":
                if last or mine[i + 1].startswith("-"):
                    return None
                i += 1
                arg = "-m" + mine[i]
            if i != len(mine) - 1:
                return None
            ns.module = arg[2:]
        elif arg == "--" and i == len(mine) - 2 and not mine[i + 1].startswith("-"):
            ns.script = mine[i + 1]
            break
        elif not arg.startswith("-") and last:
            ns.script = arg
        else:
            return None
        i += 1
    return ns


def cmd_run(ns: Any) -> int:
    from . import _runner

    if ns.module is not None and ns.script is not None:
        ns.program_args.insert(0, ns.script)
        ns.script = None
    if ns.module is None and ns.script is None:
        raise _runner.UsageError("run: expected a script or -m module to run "
                                 "(lockwise run [options] script.py [args])")
    options = _runner.Options(
        json=ns.json,
        hang_timeout=(None if ns.hang_timeout is None
                      else _runner.parse_seconds(ns.hang_timeout)),
        fail_on=_runner.parse_kinds(ns.fail_on),
        quiet=ns.quiet,
        verbose=ns.verbose,
        profile=bool(ns.profile or ns.profile_sample is not None
                     or ns.profile_collapsed is not None),
        profile_sample=(1 if ns.profile_sample is None
                        else _runner.parse_sample(ns.profile_sample)),
        profile_collapsed=ns.profile_collapsed,
    )
    if ns.module is not None:
        return _runner.run(options, ns.module, ns.program_args, module=True)
    return _runner.run(options, ns.script, ns.program_args, module=False)


def cmd_report(ns: argparse.Namespace) -> int:
    from . import _jsonreport

    try:
        data = _jsonreport.load_document(ns.file)
        found = _jsonreport.findings_of(data, ns.file)
    except _jsonreport.ReportError as exc:
        sys.stderr.write(f"lockwise: error: {exc}\n")
        return USAGE_STATUS
    try:
        return _show_report(ns, data, found)
    except BrokenPipeError:
        raise  # the reader has gone (`| head`): see main
    except Exception as exc:  # a document the validation let through: still one line
        sys.stderr.write(f"lockwise: error: cannot render {ns.file!r}: {type(exc).__name__}: "
                         f"{exc!r:.200}; this is a bug in lockwise's report validation, "
                         "please report it\n")
        return USAGE_STATUS


def _show_report(ns: argparse.Namespace, data: dict[str, Any], found: list[Any]) -> int:
    from . import _report
    from ._findings import printable

    if ns.html is not None:
        from . import _html

        try:
            _html.write(ns.html, data, found, source=ns.file)
        except OSError as exc:
            sys.stderr.write(f"lockwise: error: --html: cannot write {ns.html!r}: "
                             f"{exc.strerror or exc}; expected a writable path\n")
            return USAGE_STATUS
        sys.stderr.write(f"lockwise: HTML report written to {printable(ns.html)}\n")
        return 0
    out = sys.stdout
    for note in data.get("notes", []):
        out.write(f"lockwise: note: {printable(note)}\n")
    for finding in found:
        text = _report.render(finding)
        if finding.kind == "lock-order" and "confirmation" not in finding.details:
            text += "\n\n  " + _report.confirmation_status(finding)
        out.write(printable(text, newlines=True) + "\n\n")
    profile = data.get("profile")
    if isinstance(profile, dict):
        out.write(printable(_report.render_profile(profile), newlines=True) + "\n\n")
    out.write(printable(_report.render_summary(found), newlines=True) + "\n")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    """Run the ``lockwise`` command with ``argv`` (default: ``sys.argv[1:]``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    program_args: list[str] = []
    ns: Any = None
    if args and args[0] == "run":
        try:
            mine, program_args = _split_run_args(args[1:])
        except _BadOption as exc:
            sys.stderr.write(f"lockwise: error: {exc}\n")
            return USAGE_STATUS
        args = ["run"] + mine
        ns = _quick_run_namespace(mine)
    elif args and args[0] == "confirm":
        mine, program_args = _split_confirm_args(args[1:])
        args = ["confirm"] + mine
    if ns is None:
        parser = build_parser()
        ns = parser.parse_args(args)
        if getattr(ns, "func", None) is None:
            parser.error("expected a command: run, report or confirm")
    if ns.command in ("run", "confirm"):
        ns.program_args = program_args
    from ._runner import UsageError

    try:
        return int(ns.func(ns))
    except UsageError as exc:
        sys.stderr.write(f"lockwise: error: {exc}\n")
        sys.stderr.flush()
        return USAGE_STATUS
    except BrokenPipeError:
        if ns.command == "run":
            raise  # the program's own output: as python would report it
        # `lockwise report x.json | head`: the reader has gone, as for any
        # filter; stdout is pointed at /dev/null so that the interpreter's
        # final flush does not fail again.
        _silence_stdout()
        return 1


def _silence_stdout() -> None:
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
