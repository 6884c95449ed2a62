"""JSON reports: ``{"format": 1, "findings": [...]}``, kept complete at all times.

Besides ``findings``, a report may hold sections written by the process that
started the run: ``"order_graph"`` (the lock-order graph, ``_order.graph_data()``)
and ``"profile"`` (with ``lockwise run --profile``, ``Profiler.to_dict()``).

A :class:`JsonWriter` is a findings listener: every new finding rewrites the
file atomically (write a temporary file in the same directory, then
``os.replace``), so a program that later hangs or is killed still leaves a
complete, valid report.

Several processes may share one report (a forked child, or a subprocess that
inherited ``LOCKWISE_JSON``). Each write therefore *merges*: under an
exclusive ``flock`` on the report's directory (where ``fcntl`` exists), it
reads the findings already in the file, appends this process's findings that
are not there yet (identity: pid, time, kind, summary), refreshes its own
ones that are (a repeat count grows) and replaces the file.
No process ever removes another's findings. Only the process that starts a
run creates the file afresh (``fresh=True``).
"""

from __future__ import annotations

import _thread
import json
import os
import threading

from . import _findings
from ._findings import Finding

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: writes are atomic but not merged safely
    fcntl = None  # type: ignore[assignment]

TYPE_CHECKING = False  # True for type checkers: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Any, Callable, Optional

FORMAT = 1


def make_temp(directory: Optional[str], prefix: str, suffix: str) -> tuple[int, str]:
    """``tempfile.mkstemp`` without importing tempfile, which costs ~6 ms of
    every run's start-up (random, shutil...): a new file, readable and
    writable by its owner only, under a name no other file has. ``directory``
    None: $TMPDIR, $TEMP, $TMP, /tmp, /var/tmp, else the current directory."""
    if directory is None:
        candidates = [os.environ.get(name) for name in ("TMPDIR", "TEMP", "TMP")]
        directory = next((d for d in candidates + ["/tmp", "/var/tmp"] if d and os.path.isdir(d)),
                         os.getcwd())
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    while True:
        path = os.path.join(directory, f"{prefix}{os.urandom(8).hex()}{suffix}")
        try:
            return os.open(path, flags, 0o600), path
        except FileExistsError:  # 64 random bits taken already: draw again
            continue


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
    missing, unreadable, not JSON or not a lockwise report.
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
    if not isinstance(data, dict) or not isinstance(data.get("findings"), list):
        raise ReportError(f"{path!r} is not a lockwise JSON report: expected an object "
                          "with a 'findings' list")
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
        if fresh:
            self._write(document([]))
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        self._lock = _thread.RLock()
        self._local = threading.local()
        self._pending = False

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
        self.flush()

    def flush(self) -> None:
        """Merge this process's findings into the file now."""
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
        if not self._lock.acquire(True, _findings.INTERNAL_WAIT):
            self._local.busy = False
            return
        try:
            self.stale = False
            while self._pending:
                self._pending = False
                extra = self.sections() if self.sections is not None else {}
                self._merge([f.to_dict() for f in self._source()], extra)
        except Exception as exc:
            _findings.internal_error(f"writing the JSON report {self.path}", exc)
        finally:
            self._lock.release()
            self._local.busy = False

    def _merge(self, mine: list[dict[str, Any]], extra: dict[str, Any]) -> None:
        directory = os.path.dirname(self.path)
        dir_fd = -1
        if fcntl is not None:
            dir_fd = os.open(directory, os.O_RDONLY)
            fcntl.flock(dir_fd, fcntl.LOCK_EX)
        try:
            try:
                data = _read(self.path)
            except (OSError, ValueError):
                data = document([])
            # This process's own entries are replaced by their current form
            # (a repeat count, ``details["occurrences"]``, grows after the
            # first write); other processes' entries are kept as they are.
            current = {_identity(d): d for d in mine}
            merged: list[dict[str, Any]] = [current.pop(_identity(d), d)
                                            for d in data["findings"]]
            merged += [d for d in mine if _identity(d) in current]
            data.update(extra)
            data["format"] = FORMAT
            data["findings"] = merged
            self._write(data)
        finally:
            if dir_fd >= 0:
                os.close(dir_fd)  # releases the flock

    def _write(self, data: dict[str, Any]) -> None:
        directory, base = os.path.split(self.path)
        fd, tmp = make_temp(directory, f".{base}.", ".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1, default=str)
                f.write("\n")
            os.replace(tmp, self.path)
            self._stamp = _file_stamp(self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
