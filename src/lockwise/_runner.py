"""Running a program under lockwise (``lockwise run``, ``LOCKWISE=1``).

A :class:`Session` is lockwise watching this process: it installs the
patches, prints the human report of each new finding on stderr (the stderr of
the moment the session started, so a program that redirects ``sys.stderr``
does not capture it), keeps the JSON report up to date, runs the watchdog,
exports ``LOCKWISE_*`` variables so subprocesses are covered, and at the end
prints a summary and computes the exit status.

Subprocesses report to the parent through the JSON report: ``lockwise run``
always has one (a temporary file when ``--json`` is not given), and a child
merges its findings into it (see ``_jsonreport``). The parent's summary and
``--fail-on`` therefore count the findings of the whole process tree.

:func:`run_program` executes a script or module as ``__main__`` the way
``python script.py`` / ``python -m module`` would: ``sys.argv``,
``sys.path[0]``, ``sys.modules['__main__']``, uncaught exceptions (printed
through ``sys.excepthook`` without lockwise's frames) and ``SystemExit``
codes all behave the same.
"""

from __future__ import annotations

import atexit
import builtins
import importlib.machinery
import importlib.util
import math
import os
import sys
import threading
import time
import types

from . import (
    _errors,
    _files,
    _findings,
    _install,
    _jsonreport,
    _order,
    _report,
    _sites,
    _tracebacks,
    _watchdog,
)
from ._config import settings
from ._findings import KINDS, Finding, Record, printable
from ._state import in_main_interpreter

TYPE_CHECKING = False  # True for type checkers: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Any, Optional, TextIO

    from . import _profile

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
#: Exit status when a finding of a ``--fail-on`` kind was recorded.
FAIL_STATUS = 3
#: Exit status for bad input (missing program, bad option, bad report file).
USAGE_STATUS = 2
#: Exit status after an uncaught KeyboardInterrupt (then the process dies of
#: SIGINT, as python does: see ``_die_of_sigint``).
INTERRUPTED_STATUS = 130
_interrupted = False
_sigint_exit = False
#: How many findings are printed in full on stderr; later ones get one line.
FULL_REPORTS = 10

ENV_ACTIVATE = "LOCKWISE"
ENV_JSON = "LOCKWISE_JSON"
ENV_HANG = "LOCKWISE_HANG_TIMEOUT"
ENV_FAIL_ON = "LOCKWISE_FAIL_ON"
ENV_QUIET = "LOCKWISE_QUIET"
ENV_VERBOSE = "LOCKWISE_VERBOSE"
ENV_RUN_ID = "LOCKWISE_RUN_ID"


class UsageError(Exception):
    """Bad input; ``str()`` is the one line shown to the user (exit status 2)."""


def parse_kinds(text: str, option: str = "--fail-on") -> frozenset[str]:
    """``"deadlock,hang"`` -> ``{"deadlock", "hang"}``; ``""``/``"none"`` -> empty."""
    kinds = {k.strip() for k in text.split(",") if k.strip()}
    if kinds == {"none"}:
        return frozenset()
    if kinds == {"all"}:
        return frozenset(KINDS)
    unknown = sorted(kinds - set(KINDS))
    if unknown:
        raise UsageError(f"{option}: unknown finding kind {unknown[0]!r}; expected a comma "
                         f"list of {', '.join(KINDS)} (or 'all', 'none')")
    return frozenset(kinds)


def parse_sample(text: str, option: str = "--profile-sample") -> int:
    """``"100"`` -> 100: time one in N contentions; N must be a positive integer."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise UsageError(f"{option}: {text!r} is not a positive integer; expected N >= 1 "
                         "such as 100 (time one in N contentions)")
    return value


def parse_seconds(text: str, option: str = "--hang-timeout") -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds < math.inf:
        raise UsageError(f"{option}: {text!r} is not a number of seconds; expected a "
                         "positive number such as 5 or 0.5")
    return seconds


class Options(Record):
    """What ``lockwise run`` options and ``LOCKWISE_*`` variables set.

    ``profile_sample`` > 1 times one contention in N (``--profile-sample``);
    ``profile_collapsed`` is where to write the collapsed stacks of waiting
    time (``--profile-collapsed``)."""

    __slots__ = ("json", "hang_timeout", "fail_on", "quiet", "verbose", "profile",
                 "profile_sample", "profile_collapsed")

    def __init__(self, json: Optional[str] = None, hang_timeout: Optional[float] = None,
                 fail_on: frozenset[str] = frozenset({"deadlock"}), quiet: bool = False,
                 verbose: bool = False, profile: bool = False, profile_sample: int = 1,
                 profile_collapsed: Optional[str] = None) -> None:
        self.json = json
        self.hang_timeout = hang_timeout
        self.fail_on = fail_on
        self.quiet = quiet
        self.verbose = verbose
        self.profile = profile
        self.profile_sample = profile_sample
        self.profile_collapsed = profile_collapsed


def _flag(value: str) -> bool:
    return value.strip().lower() not in ("", "0", "false", "no", "off")


def options_from_env(environ: Optional[dict[str, str]] = None,
                     warn: Optional[TextIO] = None) -> Options:
    """Options from ``LOCKWISE_*`` variables. A bad value is ignored with one
    line on ``warn`` (the program being started is not ours to stop).
    ``LOCKWISE_FAIL_ON`` defaults to none: only an explicit value changes the
    exit status of an environment-activated process."""
    env = os.environ if environ is None else environ
    opts = Options(fail_on=frozenset())
    opts.json = env.get(ENV_JSON) or None
    opts.quiet = _flag(env.get(ENV_QUIET, ""))
    opts.verbose = _flag(env.get(ENV_VERBOSE, ""))
    for name, setter in ((ENV_HANG, "hang_timeout"), (ENV_FAIL_ON, "fail_on")):
        value = env.get(name)
        if not value:
            continue
        try:
            if setter == "hang_timeout":
                opts.hang_timeout = parse_seconds(value, name)
            else:
                opts.fail_on = parse_kinds(value, name)
        except UsageError as exc:
            if warn is not None:
                warn.write(f"lockwise: ignoring {exc}\n")
    return opts


_active: Optional[Session] = None


class Session:
    """lockwise watching this process (see the module docstring).

    ``child`` means the process belongs to a run started elsewhere (it merges
    into the run's JSON report and prints a summary only if it found
    something). ``start()`` then ``finish(status)`` once; ``finish`` returns
    the exit status to use.
    """

    def __init__(self, options: Options, child: bool = False,
                 stderr: Optional[TextIO] = None) -> None:
        self.options = options
        self.child = child
        self.stderr = stderr
        self.writer: Optional[_jsonreport.JsonWriter] = None
        self.watchdog: Optional[_watchdog.Watchdog] = None
        self.profiler: Optional[_profile.Profiler] = None
        self._temp_json: Optional[str] = None
        self._printed = 0
        #: signature -> the occurrence count last printed for it
        self._repeats: dict[Any, int] = {}
        self._finished = False
        self._pid = os.getpid()

    # ------------------------------------------------------------ lifecycle

    def start(self) -> Session:
        """Begin watching. Raises UsageError (and changes nothing) when the JSON
        report cannot be written."""
        global _active
        path = self.options.json
        if path is None and not self.child:
            path = self._temp_report()
        if path is not None:
            try:
                self.writer = _jsonreport.JsonWriter(
                    path, fresh=not self.child,
                    sections=None if self.child else self._sections)
            except OSError as exc:
                raise UsageError(f"--json: cannot write report file {path!r}: "
                                 f"{exc.strerror or exc}; expected a writable path") from None
        collapsed = self.options.profile_collapsed
        if collapsed is not None:
            try:
                with open(collapsed, "w", encoding="utf-8"):
                    pass
            except OSError as exc:
                raise UsageError(f"--profile-collapsed: cannot write {collapsed!r}: "
                                 f"{exc.strerror or exc}; expected a writable path") from None
        if _active is not None:
            _active.abandon()
        _active = self
        if self.stderr is None:
            self.stderr = sys.stderr
        if self.writer is not None:
            # Internal: it only wakes the writer thread (on disk within ms).
            _findings.add_listener(self.writer, internal=True)
            _findings.add_note_listener(self.writer.request)
        # In the reporter thread: the stream may be the program's (and take its locks).
        _findings.add_listener(self._print_finding)
        # The stderr report (or --quiet) says it: no warning, and no copy through
        # the program's root logger (handlers set on "lockwise" still get them).
        if settings.on_lock_order == "warn":
            settings.on_lock_order = "log"
        _findings.stop_propagation()
        _errors.reports_on_stderr = not self.options.quiet
        _install.install()
        _install.predating_reported = True  # said in the summary, and in the JSON
        _tracebacks.install()
        if os.environ.get("LOCKWISE_SCHEDULE"):  # a run steered by `lockwise confirm`
            from . import _schedule

            _schedule.start_from_env()
        if self.options.hang_timeout is not None:
            self.watchdog = _watchdog.Watchdog(self.options.hang_timeout).start()
        if self.options.profile or self.options.profile_collapsed is not None:
            from . import _profile  # loaded only when asked for: start-up cost

            try:
                self.profiler = _profile.Profiler(self.options.profile_sample).start()
            except RuntimeError as exc:  # a profile the program started itself
                self._write_err(f"lockwise: not profiling: {exc}")
        self._export_env(path)
        return self

    def _temp_report(self) -> str:
        """A new temporary report, ``run-<pid>-<random>.json`` in the per-user
        directory; the ones of runs whose process is gone (killed, or ended
        by ``os._exit``) are removed first. If that directory is refused, a
        private file in $TMPDIR that only this run removes."""
        private, problem = _files.user_dir(settings.shared_dir)
        directory: Optional[str] = private
        if problem is None:
            _files.remove_stale(private, "run-")
        else:
            _findings.note(_files.refusal(private, problem))
            directory = None
        fd, path = _files.make_temp(directory, f"run-{os.getpid()}-", ".json")
        os.close(fd)
        self._temp_json = path
        return path

    def _sections(self) -> dict[str, Any]:
        """The JSON report's sections besides the findings (see ``_jsonreport``)."""
        if os.getpid() != self._pid:
            return {}  # a forked child: the parent writes its own
        out: dict[str, Any] = {"order_graph": _order.graph_data(),
                               "watched": {"sites": _sites.watched_sites(),
                                           "since": "program start",
                                           "fork_audit": hasattr(os, "register_at_fork"),
                                           "predating": _install.predating_data()}}
        if self.profiler is not None:
            out["profile"] = self.profiler.to_dict()
        return out

    def _export_env(self, path: Optional[str]) -> None:
        env = os.environ
        env[ENV_ACTIVATE] = "1"
        if path is not None:
            env[ENV_JSON] = os.path.abspath(path)
        if self.options.hang_timeout is not None:
            env[ENV_HANG] = repr(self.options.hang_timeout)
        if self.options.quiet:
            env[ENV_QUIET] = "1"
        if self.options.verbose:
            env[ENV_VERBOSE] = "1"
        env.pop(ENV_FAIL_ON, None)  # the parent decides, from the merged report
        env.setdefault(ENV_RUN_ID, f"{os.getpid()}-{time.time():.6f}")

    def abandon(self) -> None:
        """Stop this session without reporting (another one takes over)."""
        global _active
        self._finished = True
        if self.watchdog is not None:
            self.watchdog.stop()
        if self.profiler is not None:
            self.profiler.stop()
        if self.writer is not None:
            _findings.remove_listener(self.writer)
            _findings.remove_note_listener(self.writer.request)
        _findings.remove_listener(self._print_finding)
        _errors.reports_on_stderr = False
        _tracebacks.uninstall()
        _install.uninstall()
        if _active is self:
            _active = None

    def _write_err(self, text: str) -> None:
        if self.options.quiet or self.stderr is None:
            return
        try:
            self.stderr.write(printable(text, newlines=True) + "\n")
            self.stderr.flush()
        except Exception:
            pass

    def _print_finding(self, finding: Finding) -> None:
        """The first occurrence of a signature in full (the first FULL_REPORTS
        of them; later ones in one line); repeats as a count, printed when it
        reaches 2, 10, 100, 1000... (``_findings.signature``)."""
        sig = _findings.signature(finding)
        told = self._repeats.get(sig)
        if told is None:
            self._repeats[sig] = 1
            self._printed += 1
            if self._printed <= FULL_REPORTS:
                render = _report.render if self.options.verbose else _report.render_brief
                self._write_err(render(finding) + "\n")
            else:
                self._write_err(f"lockwise: [{printable(finding.kind)}] "
                                f"{printable(finding.summary)}")
            return
        count = _findings.occurrences(finding)
        step = 2 if told < 2 else 10 ** len(str(told))
        if count >= step:
            self._repeats[sig] = count
            self._write_err(f"lockwise: [{printable(finding.kind)}] seen {count} times: "
                            f"{printable(_report.shorten(finding.summary))} "
                            "(reported in full once)")

    def all_findings(self) -> list[Finding]:
        """This process's findings plus those merged into the report by others."""
        mine = _findings.findings()
        if self.writer is None:
            return mine
        if self._temp_json is not None and not self.writer.written_by_others():
            return mine  # the run's own report file: no other process added to it
        self.writer.flush()
        try:
            return _jsonreport.load(self.writer.path)
        except _jsonreport.ReportError:
            return mine

    def finish(self, status: int) -> int:
        """Stop watching; write the report; print the summary; the exit status.

        The status is :data:`FAIL_STATUS` when a finding of a ``fail_on`` kind
        was recorded anywhere in the run, else ``status`` unchanged.
        """
        global _active
        if self._finished:
            return status
        self._finished = True
        if self.watchdog is not None:
            self.watchdog.stop()
        forked = os.getpid() != self._pid
        _findings.drain()  # the reports of the last findings come before the summary
        if self.writer is not None:
            self.writer.finish()  # pending findings, and the final repeat counts
        if self.profiler is not None:
            self.profiler.stop()
            if forked:  # the parent reports its own profile
                self.profiler = None
        found = self.all_findings()
        if forked:  # a forked child: its own findings only; the parent reports all
            found = [f for f in found if f.pid == os.getpid()]
        if self.profiler is not None:
            self._finish_profile(self.profiler)
        if found or not (self.child or forked):
            self._write_err(_report.render_summary(found))
            self._write_err(_report.watched_line(_sites.watched_sites(),
                                                 "made since the program started"))
            predating = _install.predating_line()
            if predating is not None:
                self._write_err(predating)
        if self._temp_json is not None and not forked:
            for leftover in (self._temp_json, self._temp_json + ".lock"):
                try:
                    os.unlink(leftover)
                except OSError:
                    pass
        if _active is self:
            _active = None
        if any(f.kind in self.options.fail_on for f in found):
            return FAIL_STATUS
        return status


    def _finish_profile(self, profiler: _profile.Profiler) -> None:
        """Print the contention table; write the collapsed stacks if asked."""
        data = profiler.to_dict(events=False)
        self._write_err(_report.render_profile(data))
        path = self.options.profile_collapsed
        if path is None:
            return
        try:
            _files.atomic_write(path, lambda f: f.writelines(
                line + "\n" for line in data["collapsed"]))
        except OSError as exc:
            self._write_err(f"lockwise: cannot write the collapsed stacks to {path!r}: "
                            f"{exc.strerror or exc}")


def active_session() -> Optional[Session]:
    return _active


# ---------------------------------------------------------------- programs


class Program(Record):
    """A compiled program ready to run as ``__main__``."""

    __slots__ = ("code", "argv0", "path0", "globals")

    def __init__(self, code: types.CodeType, argv0: str, path0: str,
                 globals: dict[str, Any]) -> None:
        self.code = code
        self.argv0 = argv0
        self.path0 = path0
        self.globals = globals


def prepare_script(path: str) -> Program:
    """Compile the script at ``path``; UsageError if there is no such file."""
    if not os.path.exists(path):
        raise UsageError(f"no such file: {path!r}; expected a Python script "
                         "(lockwise run [options] script.py [args]) or -m module")
    # Since 3.9, python makes the script's path absolute (__file__, tracebacks).
    if os.path.isdir(path):
        main = os.path.join(os.path.abspath(path), "__main__.py")
        if not os.path.isfile(main):
            raise UsageError(f"cannot find '__main__' module in {path!r}; expected a "
                             "script or a directory with __main__.py")
        source_path, path0 = main, path
    else:
        source_path, path0 = os.path.abspath(path), os.path.dirname(os.path.realpath(path))
    try:
        with open(source_path, "rb") as f:
            source = f.read()
    except OSError as exc:
        raise UsageError(f"cannot read {path!r}: {exc.strerror}; expected a readable "
                         "Python script") from None
    code = compile(source, source_path, "exec", dont_inherit=True)
    loader = importlib.machinery.SourceFileLoader("__main__", source_path)
    return Program(code, path, path0, {
        "__name__": "__main__", "__file__": source_path, "__cached__": None,
        "__doc__": None, "__loader__": loader, "__package__": None, "__spec__": None,
        "__builtins__": builtins,
    })


def prepare_module(name: str) -> Program:
    """Find and compile module ``name`` (a package runs its ``__main__``).

    Parent packages are imported, as ``python -m`` does.
    """
    def spec_of(mod: str) -> Optional[importlib.machinery.ModuleSpec]:
        try:
            return importlib.util.find_spec(mod)
        except (ImportError, ValueError):
            return None

    if not name or name.startswith("."):
        raise UsageError(f"-m: {name!r} is not a module name; expected e.g. -m package.module")
    spec = spec_of(name)
    if spec is None:
        raise UsageError(f"no module named {name!r}; expected an importable module "
                         "(lockwise run [options] -m module [args])")
    if spec.submodule_search_locations is not None:
        spec = spec_of(name + ".__main__")
        if spec is None:
            raise UsageError(f"no module named '{name}.__main__'; {name!r} is a package and "
                             "cannot be directly executed")
    loader = spec.loader
    code = loader.get_code(spec.name) if loader is not None else None  # type: ignore[attr-defined]
    if code is None:
        raise UsageError(f"no code object available for {spec.name!r}; expected a Python "
                         "source or bytecode module")
    origin = spec.origin or name
    return Program(code, origin, os.getcwd(), {
        "__name__": "__main__", "__file__": origin, "__cached__": spec.cached,
        "__doc__": None, "__loader__": loader, "__package__": spec.parent, "__spec__": spec,
        "__builtins__": builtins,
    })


def _exit_code(code: Any) -> int:
    """What the interpreter makes of ``SystemExit(code)`` (printing non-int codes)."""
    if code is None:
        return 0
    if isinstance(code, int):
        # The interpreter takes it as a C long; out of range, it exits with -1.
        return code & 0xFF if -sys.maxsize - 1 <= code <= sys.maxsize else 0xFF
    try:
        sys.stderr.write(f"{code}\n")
        sys.stderr.flush()
    except Exception:
        pass
    return 1


def _user_traceback(tb: Optional[types.TracebackType]) -> Optional[types.TracebackType]:
    """Drop the runner's own frames from the top of a traceback."""
    while tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(
            _PACKAGE_DIR + os.sep) and tb.tb_next is not None:
        tb = tb.tb_next
    return tb


def _wait_for_threads() -> None:
    """Wait for non-daemon threads as the interpreter does at exit.

    ``threading._shutdown`` runs the ``threading`` atexit callbacks (which stop
    ``concurrent.futures`` workers) and joins non-daemon threads; the
    interpreter calls it again on exit, which then returns at once.
    """
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:
        shutdown()


def run_program(program: Program, args: list[str]) -> int:
    """Run ``program`` as ``__main__`` with ``args``; its exit status.

    Returns after the program's non-daemon threads have ended.
    """
    # The frames that launched the program (console script, runpy, our CLI)
    # are not the user's: keep them out of sites and stacks.
    frame: Optional[types.FrameType] = sys._getframe()
    while frame is not None:
        _sites.INTERNAL_FILES.add(frame.f_code.co_filename)
        frame = frame.f_back
    sys.argv[:] = [program.argv0] + list(args)
    if sys.path:
        sys.path[0] = program.path0
    else:
        sys.path.append(program.path0)
    main = types.ModuleType("__main__")
    main.__dict__.update(program.globals)
    sys.modules["__main__"] = main
    status = 0
    try:
        try:
            exec(program.code, main.__dict__)
        finally:
            main = None  # type: ignore[assignment]
    except SystemExit as exc:
        status = _exit_code(exc.code)
    except BaseException as exc:
        tb = _user_traceback(exc.__traceback__)
        exc.__traceback__ = tb  # the interpreter prints this one, not the hook's argument
        sys.excepthook(type(exc), exc, tb)
        status = 1
        if isinstance(exc, KeyboardInterrupt):
            global _interrupted
            _interrupted = True
            status = INTERRUPTED_STATUS
    try:
        _wait_for_threads()
    except KeyboardInterrupt:
        status = 130
    return status


def run(options: Options, target: str, args: list[str], module: bool) -> int:
    """``lockwise run``: start a session, run the program, finish; the exit status."""
    if module:
        # Parent packages run when the module is looked up: install first.
        _install.install()
        try:
            program = prepare_module(target)
        except UsageError:
            _install.uninstall()
            raise
        except Exception as exc:  # a SyntaxError, or raised by a parent package
            _install.uninstall()
            # As python -m does, less runpy's frames: traceback, status 1.
            exc.__traceback__ = _user_traceback(exc.__traceback__)
            sys.excepthook(type(exc), exc, exc.__traceback__)
            return 1
        except BaseException:
            _install.uninstall()
            raise
    else:
        try:
            program = prepare_script(target)
        except SyntaxError as exc:  # as python does: no traceback, status 1
            exc.__traceback__ = None  # the hook prints this one, not its argument
            sys.excepthook(type(exc), exc, None)
            return 1
    session = Session(options, child=False).start()
    # Registered before the program runs, so it runs after the program's own
    # atexit handlers (they run last-registered first).
    atexit.register(_die_of_sigint)
    status = run_program(program, args)
    status = session.finish(status)
    global _sigint_exit
    _sigint_exit = _interrupted and status == INTERRUPTED_STATUS
    return status


def _die_of_sigint() -> None:
    """After an uncaught KeyboardInterrupt, end as python does: die of SIGINT
    once the atexit handlers have run, so the parent sees the signal (-2 from
    subprocess, 130 in a shell) rather than a plain exit status."""
    if not _sigint_exit or os.name != "posix":
        return
    import signal

    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    except (ValueError, OSError):
        return
    os.kill(os.getpid(), signal.SIGINT)


def boot() -> None:
    """Entry point of the ``.pth`` hook (only called when ``LOCKWISE`` is set)."""
    try:
        if in_main_interpreter():  # no activation in a subinterpreter
            activate_from_env()
    except Exception as exc:
        try:
            sys.stderr.write(f"lockwise: LOCKWISE is set but lockwise could not start: "
                             f"{exc}\n")
        except Exception:
            pass


def activate_from_env() -> Optional[Session]:
    """``LOCKWISE=1``: start a session from ``LOCKWISE_*`` variables (the .pth hook).

    The summary, the report and the exit status (``LOCKWISE_FAIL_ON``) are
    handled at interpreter exit, after the ``threading`` shutdown.
    """
    if _active is not None:
        return _active
    options = options_from_env(warn=sys.stderr)
    child = ENV_RUN_ID in os.environ
    session = Session(options, child=child).start()
    atexit.register(_at_exit, session)
    return session


def _at_exit(session: Session) -> None:
    if session._finished:
        return
    status = session.finish(0)
    if status == FAIL_STATUS:
        # Only an explicit LOCKWISE_FAIL_ON gets here. The exit status can no
        # longer be changed otherwise: flush what we can and leave.
        logging = sys.modules.get("logging")  # flush its handlers, if the program used it
        if logging is not None:
            logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                if stream is not None:
                    stream.flush()
            except Exception:
                pass
        os._exit(FAIL_STATUS)
