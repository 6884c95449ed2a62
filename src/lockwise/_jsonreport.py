"""JSON reports: ``{"format": 1, "findings": [...]}``, kept complete at all times.

Besides ``findings``, a report may hold sections written by the process that
started the run: ``"order_graph"`` (the lock-order graph, ``_order.graph_data()``)
and ``"profile"`` (with ``lockwise run --profile``, ``Profiler.to_dict()``);
and ``"notes"``: one line for each check that ran degraded in any process of
the run (``_findings.note``: e.g. no detection across processes).

A :class:`JsonWriter` is a findings listener. Every write replaces the file
atomically (write a temporary file in the same directory, then
``os.replace``), so the file on disk is always a complete, valid report.
Writing is off the detecting thread and batched: the listener only marks
the report dirty and wakes the writer's own thread (a raw ``_thread``,
counted as lockwise's; not the reporter, whose jobs run the program's
logging handlers and may block). That thread writes every finding recorded
so far in one merge, then waits ``max(MIN_GAP, GAP_RATIO * the write's
cost)`` before the next, so however fast findings come, writing takes at
most a fixed share of one core and each finding costs amortised O(1): a
burst of n findings is written in O(log n) merges, not n. A finding is on
disk within that gap (milliseconds for a report of hundreds of findings),
so a program killed (``kill -9``) shortly after still leaves it in the
report; at exit the pending findings are written before the process ends
(``atexit``; the runner's ``finish`` too).

Several processes may share one report (a forked child, or a subprocess that
inherited ``LOCKWISE_JSON``). Each write therefore *merges*: under an
exclusive ``flock`` (where ``fcntl`` exists), it reads the findings already
in the file, appends this process's findings that are not there yet
(identity: pid, time, kind, summary), refreshes its own ones that are (a
repeat count grows) and replaces the file. No process ever removes another's
findings. Only the process that starts a run creates the file afresh
(``fresh=True``).

The ``flock`` is taken on a lock file in the per-user directory
(``_files.user_dir``; ``<report>.lock`` for a report that lives there,
else ``report-<hash of the path>.lock``), opened without following links:
never on the report's directory or on a file another user could create,
hold or replace. The holder removes the lock file before unlocking, so they
do not pile up (a waiter left with the lock of a removed file takes a new
one). Processes of different users therefore do not serialise their merges
into one report; neither do processes when the per-user directory is
refused (said once, as a note).
"""

from __future__ import annotations

import _thread
import atexit
import json
import os
import threading
import time
import weakref

from . import _files, _findings
from ._config import settings
from ._files import atomic_write
from ._findings import Finding
from ._state import internal_threads

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: writes are atomic but not merged safely
    fcntl = None  # type: ignore[assignment]

TYPE_CHECKING = False  # True for type checkers: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Any, Callable, Optional

FORMAT = 1
#: Least pause of the writer thread between two writes (seconds).
MIN_GAP = 0.01
#: The writer pauses this many times the last write's duration between two
#: writes: writing uses at most 1 / (1 + GAP_RATIO) of the writer's time.
GAP_RATIO = 3.0
#: At exit, the longest wait for a write in progress in the writer thread.
EXIT_WAIT = 10.0


class ReportError(Exception):
    """A report file that cannot be read; ``str()`` is one line for the user."""


def _identity(data: dict[str, Any]) -> tuple[Any, ...]:
    return (data.get("pid"), data.get("time"), data.get("kind"), data.get("summary"))


def _read(path: str) -> dict[str, Any]:
    """The report at ``path`` (finding dicts only); raises OSError or ValueError."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict) or not isinstance(data.get("findings"), list):
        raise ValueError("expected an object with a 'findings' list")
    data["findings"] = [d for d in data["findings"] if isinstance(d, dict)]
    return data


def load_document(path: str) -> dict[str, Any]:
    """The whole JSON report at ``path`` (findings as dicts, plus any sections
    such as ``"profile"`` and ``"order_graph"``).

    Raises :class:`ReportError` with a one-line message when the file is
    missing, unreadable, not JSON or not a lockwise report, or when a field
    the renderers read is missing or of the wrong type (``_validate``).
    """
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ReportError(f"no such report file: {path!r}; expected a JSON file written "
                          "by 'lockwise run --json FILE'") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ReportError(f"cannot read report file {path!r}: {reason}") from None
    except ValueError as exc:
        raise ReportError(f"{path!r} is not a lockwise JSON report: invalid JSON ({exc})") from None
    except RecursionError:
        raise ReportError(f"{path!r} is not a lockwise JSON report: nested too deeply "
                          "(lockwise never writes more than a few levels)") from None
    if not isinstance(data, dict) or not isinstance(data.get("findings"), list):
        raise ReportError(f"{path!r} is not a lockwise JSON report: expected an object "
                          "with a 'findings' list")
    from . import _validate  # only when a report is read: not at start-up

    try:
        _validate.check(data)
    except ValueError as exc:
        raise ReportError(f"{path!r} is not a valid lockwise JSON report: {exc}") from None
    return data


def findings_of(data: dict[str, Any], path: str = "report") -> list[Finding]:
    """The findings of a loaded report document, oldest first (ReportError if invalid)."""
    result = []
    for i, item in enumerate(data["findings"]):
        try:
            result.append(Finding.from_dict(item))
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            raise ReportError(f"{path!r} is not a lockwise JSON report: finding {i} is "
                              f"invalid ({exc})") from None
    return result


def load(path: str) -> list[Finding]:
    """The findings of the JSON report at ``path``, oldest first.

    Raises :class:`ReportError` with a one-line message when the file is
    missing, unreadable, not JSON or not a lockwise report.
    """
    return findings_of(load_document(path), path)


def document(findings: list[dict[str, Any]]) -> dict[str, Any]:
    return {"format": FORMAT, "findings": findings}


def _file_stamp(path: str) -> Optional[tuple[int, int, int]]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _lock(path: str) -> int:
    """Open and ``flock`` the lock file ``path``; its descriptor. The holder
    removes the file before unlocking (so lock files never pile up): a waiter
    that then gets the lock of a removed file tries again with a new one."""
    while True:
        fd = _files.open_private(path)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            st = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        mine = os.fstat(fd)
        if st is not None and (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino):
            return fd
        os.close(fd)


def _unlock(path: Optional[str], fd: int) -> None:
    try:
        if path is not None:
            os.unlink(path)
    except OSError:
        pass
    finally:
        os.close(fd)  # releases the flock


#: Writers with a writer thread: finished by ``os._exit`` too (below).
_pending_at_exit: weakref.WeakSet[JsonWriter] = weakref.WeakSet()
_real_os_exit: Optional[Callable[[int], Any]] = None


def _hook_os_exit() -> None:
    """Make ``os._exit`` write pending reports first, as exit does through
    ``atexit`` (forked children, multiprocessing's fork workers and
    ``lockwise run`` programs end with it). Installed on first use."""
    global _real_os_exit
    if _real_os_exit is not None:
        return
    real = _real_os_exit = os._exit

    def _exit(status: int) -> Any:
        for writer in list(_pending_at_exit):
            try:
                writer.finish(EXIT_WAIT / 10)
            except BaseException:  # never keep a process from exiting
                pass
        return real(status)

    _exit.__doc__ = real.__doc__
    os._exit = _exit


class JsonWriter:
    """Keeps the JSON report at ``path`` up to date; use as a findings listener.

    ``fresh`` starts the file empty (the process that starts a run);
    otherwise this process's findings are merged into what is there.
    ``source`` gives the findings to write (default: all of this process's).
    ``sections`` gives extra top-level entries (the run's ``"profile"`` and
    ``"order_graph"``) written with every merge; entries already in the file
    that this writer does not give are kept (a child keeps its parent's).
    Never raises into the caller: failures go to ``internal_error``.
    """

    def __init__(self, path: str, fresh: bool,
                 source: Optional[Callable[[], list[Finding]]] = None,
                 sections: Optional[Callable[[], dict[str, Any]]] = None) -> None:
        self.path = os.path.abspath(path)
        self._source = source or _findings.findings
        self.sections = sections
        self._lock = _thread.RLock()  # the interpreter's own: never instrumented
        self._local = threading.local()
        self._pending = False
        #: A repeat count changed since the last write (see ``__call__``).
        self.stale = False
        #: (inode, mtime, size) of the file as this writer last left it.
        self._stamp: Optional[tuple[int, int, int]] = None
        #: The document as this writer last wrote it (what the file holds
        #: unless ``written_by_others()``).
        self._last: Optional[dict[str, Any]] = None
        #: A write was asked for (``request``) and the writer thread has not
        #: started it yet.
        self.requested = False
        self._wake = _thread.allocate_lock()  # released to wake the writer thread
        self._wake.acquire()
        self._starting = _thread.allocate_lock()
        self._writer: Optional[int] = None  # ident of the writer thread
        self._writer_pid = 0
        self._exit_registered = False
        self._last_end = 0.0
        self._last_cost = 0.0
        if fresh:
            self._write(document([]))
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        self._lock = _thread.RLock()
        self._local = threading.local()
        self._pending = False
        self._wake = _thread.allocate_lock()
        self._wake.acquire()
        self._starting = _thread.allocate_lock()
        self._writer = None  # the parent's thread does not exist here

    def written_by_others(self) -> bool:
        """Whether another process replaced the file since this writer last
        wrote it (every write replaces the file: a new inode)."""
        return self._stamp is None or _file_stamp(self.path) != self._stamp

    def __call__(self, finding: Finding) -> None:
        n = _findings.occurrences(finding)
        if n > _findings.KEEP_PER_SIGNATURE and str(n).rstrip("0") != "1":
            # A repeat that findings() does not keep: only its count changes.
            # Rewriting the whole file per occurrence would make a repeated
            # deadlock cost O(report) each time; the count is written at 100,
            # 1000... occurrences, with the next new finding, and at the end.
            self.stale = True
            return
        self.request()

    def request(self) -> None:
        """Have the writer thread merge this process's findings soon. O(1),
        waits for nothing: safe in a detecting thread, a finalizer or a
        signal handler."""
        self.requested = True
        if self._writer is None or self._writer_pid != os.getpid():
            self._start_writer()
        try:
            self._wake.release()
        except RuntimeError:  # already released: the writer will look anyway
            pass

    def _start_writer(self) -> None:
        if not self._starting.acquire(False):
            return  # another thread is starting it
        try:
            if self._writer is not None and self._writer_pid == os.getpid():
                return
            if not self._exit_registered:
                self._exit_registered = True
                atexit.register(self.finish)
                _pending_at_exit.add(self)
                _hook_os_exit()
            try:
                ident = _thread.start_new_thread(self._run, ())
            except RuntimeError:  # interpreter shutting down: write here and now
                self.finish()
                return
            internal_threads.add(ident)
            self._writer = ident
            self._writer_pid = os.getpid()
        finally:
            self._starting.release()

    def _run(self) -> None:
        """The writer thread: one merge per wake-up, paced (module docstring)."""
        while True:
            self._wake.acquire()
            pause = max(MIN_GAP, GAP_RATIO * self._last_cost) - (time.monotonic()
                                                                 - self._last_end)
            if pause > 0:
                time.sleep(pause)  # findings recorded meanwhile join this write
            if self.requested:
                self.flush(clear_request=True)

    def finish(self, wait: float = EXIT_WAIT) -> None:
        """Write what is pending now (at exit), waiting up to ``wait`` seconds
        for a write in progress."""
        if self.requested or self.stale:
            self.flush(wait, clear_request=True)
        elif self._lock.acquire(True, wait):
            # The writer thread may be in the middle of a write (it clears
            # ``requested`` under the lock): let it end before the exit.
            self._lock.release()

    def flush(self, wait: float = _findings.INTERNAL_WAIT, clear_request: bool = False) -> None:
        """Merge this process's findings into the file now, in this thread."""
        if getattr(self._local, "busy", False):
            # Re-entered (a signal handler or finalizer recorded a finding while
            # this thread was writing): the outer write loop picks it up.
            self._pending = True
            return
        self._local.busy = True
        self._pending = True
        # Timed: the writing thread may be held up by a finalizer that runs
        # the program's code (and waits for a lock this thread holds). It
        # then writes again, this finding included, once it is free.
        if not self._lock.acquire(True, wait):
            self._local.busy = False
            return
        start = time.monotonic()
        try:
            if clear_request:
                self.requested = False  # under the lock: see ``finish``
            self.stale = False
            while self._pending:
                self._pending = False
                extra = self.sections() if self.sections is not None else {}
                self._merge([f.to_dict() for f in self._source()], extra)
        except Exception as exc:
            _findings.internal_error(f"writing the JSON report {self.path}", exc)
        finally:
            self._last_end = end = time.monotonic()
            self._last_cost = end - start
            self._lock.release()
            self._local.busy = False

    def _lock_path(self) -> Optional[str]:
        """The merge lock file (see the module docstring); None: no lock."""
        directory, problem = _files.user_dir(settings.shared_dir)
        if problem is not None:
            _findings.note(_files.refusal(directory, problem))
            return None
        if os.path.dirname(self.path) == directory:
            return self.path + ".lock"
        import hashlib

        digest = hashlib.sha256(os.fsencode(self.path)).hexdigest()[:32]
        return os.path.join(directory, f"report-{digest}.lock")

    def _merge(self, mine: list[dict[str, Any]], extra: dict[str, Any]) -> None:
        lock_path = self._lock_path() if fcntl is not None else None
        lock_fd = -1 if lock_path is None else _lock(lock_path)
        try:
            data = self._last
            if data is None or self.written_by_others():
                try:
                    data = _read(self.path)
                except (OSError, ValueError):
                    data = document([])
            else:  # the file holds what this writer wrote last: no need to parse it
                data = dict(data)
            # This process's own entries are replaced by their current form
            # (a repeat count, ``details["occurrences"]``, grows after the
            # first write); other processes' entries are kept as they are.
            current = {_identity(d): d for d in mine}
            merged: list[dict[str, Any]] = [current.pop(_identity(d), d)
                                            for d in data["findings"]]
            merged += [d for d in mine if _identity(d) in current]
            data.update(extra)
            notes = data.get("notes")
            notes = [n for n in notes if isinstance(n, str)] if isinstance(notes, list) else []
            notes += [n for n in _findings.notes() if n not in notes]
            if notes:
                data["notes"] = notes
            data["format"] = FORMAT
            data["findings"] = merged
            self._write(data)
        finally:
            if lock_fd >= 0:
                _unlock(lock_path, lock_fd)

    def _write(self, data: dict[str, Any]) -> None:
        # dumps, not dump: json.dump always runs the pure-Python encoder (4x slower).
        text = json.dumps(data, indent=1, default=str) + "\n"

        def dump(f: Any) -> None:
            f.write(text)

        self._last = None
        atomic_write(self.path, dump)
        self._stamp = _file_stamp(self.path)
        self._last = data
