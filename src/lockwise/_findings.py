"""Findings: the structured result of every check, and what happens to them.

A finding is recorded once per distinct ``key``. A key names one
*occurrence*: for a deadlock, one formation of the waits (each thread's
``ThreadState.uid`` and ``changes``), so threads that detect the same
formation concurrently record it once, and the same deadlock formed again
(fresh threads reusing idents, fresh locks reusing ``id()``s, a thread that
caught DeadlockError and retries) is a new occurrence that raises again.
Recording keeps it for :func:`findings`, logs it to the ``lockwise`` logger,
tells the listeners (the JSON writer, the pytest plugin) and then the caller
applies the user's policy. Nothing here runs on the hot path.

Repeats. Occurrences with one :func:`signature` (same kind, same rule, locks
of the same creation sites, threads of the same names once digits are
ignored) are one problem seen several times: every occurrence is recorded,
told to the listeners and gets the policy, but only the first
``KEEP_PER_SIGNATURE`` are kept in :func:`findings`; the rest are counted
(:func:`occurrences`, and ``details["occurrences"]`` of the first one, which
the JSON report carries). Printed reports show a repeat as a count.

Who runs what. Recording is synchronous in the detecting thread and runs
only lockwise's code: the findings list, the keys, and the *internal*
listeners (``add_listener(..., internal=True)``: the JSON writer, so the
report is on disk before the program can exit, and the pytest plugin's
lists). Everything that may run the program's code, which may take the
program's locks, is handed to the *reporter*, a lockwise thread fed by a
queue (raw ``_thread`` primitives; its ident is in
``_state.internal_threads``, so the detector does not count it): logging
(the program's handlers), the other listeners (the runner's stderr report,
whose stream may be the program's), callable policies (``on_deadlock=f``)
and the stderr note of :func:`internal_error`. So ``DeadlockError`` is
raised at once, and a handler that takes a lock of the deadlock waits in
the reporter, not in the cycle. The ``"warn"`` policy stays in the
detecting thread: a warning belongs to that thread's control flow (``-W
error`` raises it there; ``catch_warnings`` and ``pytest.warns`` capture it
there); use ``"log"`` to keep the program's code out of it entirely.
:func:`flush` waits for the reporter; it is drained at exit (while it makes
progress: a handler blocked for good is given up after ``EXIT_STALL``).

Memory: the keys of the last ``MAX_KEYS`` occurrences (a key can only come
back while its threads stay in the same waits, i.e. shortly after it was
recorded), at most ``KEEP_PER_SIGNATURE`` findings and one counter per
signature.
"""

from __future__ import annotations

import _thread
import atexit
import os
import sys
import threading
import time
import warnings
from collections import deque

from ._errors import DeadlockWarning, HangWarning, PotentialDeadlockWarning
from ._state import internal_threads

TYPE_CHECKING = False  # True for type checkers: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Any, Callable, Hashable, Optional

    from ._config import Policy

_logger: Any = None
_propagate = True


def logger() -> Any:
    """The "lockwise" logger that findings go to, or None before the program
    imports ``logging``: until then no handler can have been set, and
    importing it here (~15 ms, under the import lock, possibly while a
    deadlock is being reported) would buy nothing."""
    global _logger
    if _logger is None:
        logging = sys.modules.get("logging")
        if logging is None or not hasattr(logging, "NullHandler"):  # absent or being imported
            return None
        made = logging.getLogger("lockwise")
        made.addHandler(logging.NullHandler())
        made.propagate = _propagate
        _logger = made
    return _logger


def stop_propagation() -> None:
    """Keep findings out of the root logger (handlers set on "lockwise" still get them)."""
    global _propagate
    _propagate = False
    if _logger is not None:
        _logger.propagate = False

KINDS = ("deadlock", "lock-order", "hang", "contention", "fork-hazard")


class Record:
    """Plain data: equality and repr by the fields in ``__slots__``, as a
    dataclass has. (The dataclasses module costs ~13 ms of every run's
    start-up: it imports inspect, ast and dis.)"""

    __slots__: tuple[str, ...] = ()

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Record)
        return self._values() == other._values()

    __hash__ = None  # type: ignore[assignment]  # mutable, as a dataclass

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"


class FrozenRecord(Record):
    """A Record that cannot change after ``__init__``, and hashes by its fields."""

    __slots__ = ()

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"cannot assign to field {name!r} of {type(self).__name__}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r} of {type(self).__name__}")

    def __hash__(self) -> int:  # type: ignore[override]  # Record's is None
        return hash(self._values())

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickle and copy through __init__ (the fields in slot order), not
        # through the __setattr__ that refuses changes.
        return (type(self), self._values())


_set = object.__setattr__  # FrozenRecord.__init__ sets its fields through this


class FrameInfo(FrozenRecord):
    """One frame of a user stack."""

    __slots__ = ("filename", "lineno", "function", "line")
    filename: str
    lineno: int
    function: str
    line: str

    def __init__(self, filename: str, lineno: int, function: str, line: str = "") -> None:
        _set(self, "filename", filename)
        _set(self, "lineno", lineno)
        _set(self, "function", function)
        _set(self, "line", line)

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.filename, "line": self.lineno, "function": self.function,
                "code": self.line}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FrameInfo:
        return cls(str(data.get("file", "?")), int(data.get("line", 0)),
                   str(data.get("function", "?")), str(data.get("code", "")))


class LockRef(FrozenRecord):
    """A lock as reports name it: display name, creation site and type."""

    __slots__ = ("name", "site", "type")
    name: str
    site: str
    type: str

    def __init__(self, name: str, site: str, type: str = "Lock") -> None:
        _set(self, "name", name)
        _set(self, "site", site)
        _set(self, "type", type)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "site": self.site, "type": self.type}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LockRef:
        return cls(str(data.get("name", "?")), str(data.get("site", "?")),
                   str(data.get("type", "Lock")))


class StackInfo(Record):
    """A labelled stack: whose it is and what it shows (e.g. 'acquired A')."""

    __slots__ = ("thread", "title", "frames")

    def __init__(self, thread: str, title: str, frames: list[FrameInfo]) -> None:
        self.thread = thread
        self.title = title
        self.frames = frames

    def to_dict(self) -> dict[str, Any]:
        return {"thread": self.thread, "title": self.title,
                "frames": [f.to_dict() for f in self.frames]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StackInfo:
        return cls(str(data.get("thread", "?")), str(data.get("title", "")),
                   [FrameInfo.from_dict(f) for f in data.get("frames", [])])


_now = time.time


class Finding(Record):
    """What a check found. ``kind`` is one of ``KINDS``.

    ``details`` holds kind-specific JSON-ready data (the cycle, the table of
    holders and waiters); ``text`` is the human report. ``time`` and ``pid``
    default to now and this process.
    """

    __slots__ = ("kind", "summary", "threads", "locks", "stacks", "details", "text", "key",
                 "time", "pid")

    def __init__(self, kind: str, summary: str, threads: list[str], locks: list[LockRef],
                 stacks: Optional[list[StackInfo]] = None,
                 details: Optional[dict[str, Any]] = None, text: str = "",
                 key: Hashable = None, time: Optional[float] = None,
                 pid: Optional[int] = None) -> None:
        self.kind = kind
        self.summary = summary
        self.threads = threads
        self.locks = locks
        self.stacks: list[StackInfo] = [] if stacks is None else stacks
        self.details: dict[str, Any] = {} if details is None else details
        self.text = text
        self.key = key
        self.time: float = _now() if time is None else time
        self.pid: int = os.getpid() if pid is None else pid

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "summary": self.summary,
            "threads": list(self.threads),
            "locks": [lock.to_dict() for lock in self.locks],
            "stacks": [stack.to_dict() for stack in self.stacks],
            "details": self.details,
            "text": self.text,
            "time": self.time,
            "pid": self.pid,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        if not isinstance(data, dict) or "kind" not in data:
            raise ValueError("a finding must be an object with a 'kind'")
        details = dict(data.get("details", {}))
        if isinstance(data.get("confirmation"), dict):  # written by `lockwise confirm`
            details["confirmation"] = data["confirmation"]
        return cls(
            kind=str(data["kind"]),
            summary=str(data.get("summary", "")),
            threads=[str(t) for t in data.get("threads", [])],
            locks=[LockRef.from_dict(lock) for lock in data.get("locks", [])],
            stacks=[StackInfo.from_dict(s) for s in data.get("stacks", [])],
            details=details,
            text=str(data.get("text", "")),
            time=float(data.get("time", 0.0)),
            pid=int(data.get("pid", 0)),
        )

    def __str__(self) -> str:
        """The text report (or the summary), control characters escaped."""
        return printable(self.text, newlines=True) if self.text else printable(self.summary)


if TYPE_CHECKING:
    Listener = Callable[[Finding], None]

#: How many occurrences of one signature ``findings()`` keeps (the rest are counted).
KEEP_PER_SIGNATURE = 10
#: How many keys of recent occurrences are remembered to de-duplicate them.
MAX_KEYS = 4096

_findings: list[Finding] = []
#: Keys of the last MAX_KEYS occurrences, oldest first (a dict as an ordered set).
_seen: dict[Hashable, object] = {}
#: signature -> [occurrences, first finding of that signature]
_repeats: dict[Hashable, list[Any]] = {}
_listeners: list[Listener] = []
_internal_listeners: list[Listener] = []
# A raw, reentrant lock: never instrumented, held only for list and dict
# updates that run no user code; reentrant, so a signal handler or finalizer
# that records a finding while this thread is inside cannot wait on itself.
# Recording waits for it ``INTERNAL_WAIT`` at most: a finalizer run by an
# allocation inside another thread's update may block that thread on a
# program lock, possibly one the recording thread holds.
_lock = _thread.RLock()
#: Longest wait of a recording thread for an internal lock held by another thread.
INTERNAL_WAIT = 0.2


def _pattern(name: str) -> str:
    """A thread name with every run of digits replaced by ``#``
    ("Thread-12 (worker)" -> "Thread-# (worker)")."""
    out: list[str] = []
    for ch in name:
        if ch.isdigit():
            if not out or out[-1] != "#":
                out.append("#")
        else:
            out.append(ch)
    return "".join(out)


def signature(finding: Finding) -> Hashable:
    """What makes two occurrences "the same" problem in printed reports: the
    kind, the rule (deadlocks) or level (lock-order), the creation sites of
    the locks involved and the names of the threads with digits ignored.
    Instance serials (``#3``), thread idents, times and stacks are left out."""
    details = finding.details
    how = details.get("rule") or details.get("level") or ""
    sites = tuple(sorted(lock.site for lock in finding.locks))
    threads = tuple(sorted(_pattern(name) for name in finding.threads))
    return (finding.kind, str(how), sites, threads)


def is_known(key: Hashable) -> bool:
    """Whether an occurrence with this key was recorded (recently: see MAX_KEYS)."""
    return key in _seen


def occurrences(finding: Finding) -> int:
    """How many occurrences of ``finding``'s signature were recorded (0 if none)."""
    entry = _repeats.get(signature(finding))
    return 0 if entry is None else int(entry[0])


def record(finding: Finding) -> bool:
    """Record ``finding`` unless its key is known; True if new.

    New findings are logged and passed to the listeners; the caller applies
    the policy (see :func:`apply_policy`).
    """
    sig = signature(finding)
    if finding.key is not None:
        # One atomic dict operation decides who records a key: no lock needed.
        token = object()
        if _seen.setdefault(finding.key, token) is not token:
            return False
        if len(_seen) > MAX_KEYS:
            try:
                del _seen[next(iter(_seen))]
            except (KeyError, RuntimeError, StopIteration):  # another thread evicted
                pass
    locked = _lock.acquire(True, INTERNAL_WAIT)
    try:
        # One statement: a finalizer recording a finding here in between
        # would otherwise lose a count.
        entry = _repeats.setdefault(sig, [0, finding])
        entry[0] += 1
        count = entry[0]
        if count > 1:
            # A new dict, not an update: a writer may be serialising the old one.
            first: Finding = entry[1]
            first.details = {**first.details, "occurrences": count}
        if count <= KEEP_PER_SIGNATURE:
            _findings.append(finding)
        internal = list(_internal_listeners)
        listeners = list(_listeners)
    finally:
        if locked:
            _lock.release()
    for listener in internal:
        try:
            listener(finding)
        except Exception as exc:
            internal_error(f"finding listener {listener!r}", exc)
    defer(_deliver, finding, listeners, count)
    return True


def _deliver(finding: Finding, listeners: list[Listener], count: int) -> None:
    """In the reporter thread: log ``finding`` and tell the program's listeners."""
    try:
        log = logger()
        if log is not None:
            # logging.WARNING and logging.ERROR
            level = 30 if finding.kind in ("lock-order", "contention") else 40
            if count == 1:
                log.log(level, "%s", str(finding))
            else:  # a repeat: the full report was logged with the first one
                log.log(level, "lockwise: %s seen again (%d times): %s", finding.kind, count,
                        printable(finding.summary))
    except Exception as exc:  # a broken user handler must not break the reporter
        internal_error("logging a finding", exc)
    for listener in listeners:
        try:
            listener(finding)
        except Exception as exc:
            internal_error(f"finding listener {listener!r}", exc)


def findings(kind: Optional[str] = None) -> list[Finding]:
    """The findings recorded so far, oldest first; only ``kind`` if given."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown finding kind {kind!r}; expected one of {', '.join(KINDS)}")
    with _lock:
        return [f for f in _findings if kind is None or f.kind == kind]


def clear() -> None:
    """Forget every finding and note (see :func:`lockwise.reset`)."""
    with _lock:
        _findings.clear()
        _seen.clear()
        _notes.clear()
        _repeats.clear()


_notes: list[str] = []
_note_listeners: list[Callable[[], None]] = []


def note(message: str) -> bool:
    """Say once that a check runs degraded (e.g. no detection across
    processes): one line on stderr, and kept for the JSON report's
    ``"notes"``. True if new. Never silent, never raises."""
    with _lock:
        if message in _notes:
            return False
        _notes.append(message)
        listeners = list(_note_listeners)
    try:
        sys.stderr.write(f"lockwise: warning: {printable(message)}\n")
        sys.stderr.flush()
    except Exception:
        pass
    for listener in listeners:
        try:
            listener()
        except Exception as exc:
            internal_error(f"note listener {listener!r}", exc)
    return True


def notes() -> list[str]:
    """The notes so far (see :func:`note`), oldest first."""
    with _lock:
        return list(_notes)


def add_note_listener(listener: Callable[[], None]) -> None:
    with _lock:
        _note_listeners.append(listener)


def remove_note_listener(listener: Callable[[], None]) -> None:
    with _lock:
        try:
            _note_listeners.remove(listener)
        except ValueError:
            pass


def _escape_table(keep_newline: bool) -> dict[int, str]:
    codes = [*range(0x00, 0x20), *range(0x7F, 0xA0), 0x061C, 0x200E, 0x200F,
             *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
    return {c: (f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}")
            for c in codes if not (keep_newline and c == 0x0A)}


#: str.translate tables (no ``re``: this runs in internal-error reports, maybe
#: while ``re`` itself is being imported): without and with line feeds kept.
_CONTROLS = (_escape_table(False), _escape_table(True))


def printable(text: str, newlines: bool = False) -> str:
    """``text`` with control characters escaped (``\\x1b``, ``\\u202e``): C0 and
    C1 controls, DEL, and the bidirectional overrides that reorder a line on
    screen. ``newlines`` keeps line feeds (for multi-line reports whose
    fields were escaped one by one). Everything lockwise writes for a
    terminal goes through this: names, paths and source lines come from the
    program or from a report file and may carry ANSI escape sequences."""
    return text.translate(_CONTROLS[1 if newlines else 0])


def add_listener(listener: Listener, internal: bool = False) -> None:
    """Call ``listener(finding)`` for every new finding, in the reporter thread.

    ``internal``: lockwise's own listeners that run no program code (the JSON
    writer, the pytest plugin's lists) are called at once, in the recording
    thread, which may hold or wait for the program's locks.
    """
    with _lock:
        (_internal_listeners if internal else _listeners).append(listener)


def remove_listener(listener: Listener) -> None:
    with _lock:
        for group in (_listeners, _internal_listeners):
            try:
                group.remove(listener)
            except ValueError:
                pass


_WARNING_FOR = {"deadlock": DeadlockWarning, "lock-order": PotentialDeadlockWarning,
                "hang": HangWarning}


def apply_policy(finding: Finding, policy: Policy) -> bool:
    """Apply ``policy`` to a new finding; True when the caller must raise.

    A warning points at the innermost user frame of the finding's first stack.
    It may itself raise (``-W error::...``): that is the user's choice.
    """
    if policy == "raise":
        return True
    if policy == "warn":
        category = _WARNING_FOR.get(finding.kind, RuntimeWarning)
        frames = finding.stacks[0].frames if finding.stacks else []
        filename, lineno = (frames[-1].filename, frames[-1].lineno) if frames else ("lockwise", 0)
        warnings.warn_explicit(_warning(category, finding), category, filename, lineno,
                               module="lockwise")
    elif callable(policy):
        defer(_call_policy, policy, finding)  # the program's code: in the reporter
    return False


def _warning(category: type[Warning], finding: Finding) -> Warning:
    """A one-line warning (pytest's summary lists every warning's whole text)
    that carries the finding, whose ``str()`` is the full report."""
    first = printable(f"lockwise: {finding.kind}: {finding.summary}")
    try:
        from ._report import render_brief

        first = render_brief(finding).split("\n", 1)[0]
    except Exception:
        pass
    warning = category(f"{first} (full report: the warning's .finding, or "
                       "lockwise.findings())")
    warning.finding = finding  # type: ignore[attr-defined]
    return warning


def _call_policy(policy: Callable[[Finding], Any], finding: Finding) -> None:
    try:
        policy(finding)
    except Exception as exc:
        internal_error(f"the on_{finding.kind.replace('-', '_')} callable", exc)


_internal_errors: list[str] = []


def internal_error(where: str, exc: BaseException) -> None:
    """Report a failure inside lockwise on stderr; never raise it."""
    try:
        text = f"lockwise: internal error in {where}: {type(exc).__name__}: {exc}"
    except Exception:  # an exception whose str() fails: its type must do
        text = f"lockwise: internal error in {where}: {type(exc).__name__}"
    message = printable(text)
    _internal_errors.append(message)
    # sys.stderr may be the program's object (and take its locks): the reporter writes.
    defer(_write_stderr, message + " (the program continues; please report this)\n")


def _write_stderr(text: str) -> None:
    try:
        sys.stderr.write(text)
    except Exception:
        pass


def internal_errors() -> list[str]:
    """Messages of the internal errors reported so far (for tests)."""
    return list(_internal_errors)


# ---------------------------------------------------------------- reporter

if TYPE_CHECKING:
    Job = tuple[Callable[..., Any], tuple[Any, ...]]

#: Exit drains the reporter while it makes progress; a job that makes none for
#: this long (a handler blocked for good) is given up.
EXIT_STALL = 1.0

_jobs: deque[Job] = deque()  # append and popleft are atomic: no lock
_delivered = 0  # jobs ever finished (written by the reporter only)
_running = False  # the reporter is running a job (written by the reporter only)
_wake = _thread.allocate_lock()  # released to wake the reporter
_wake.acquire()
_starting = _thread.allocate_lock()  # taken without waiting, to start the reporter once
#: Ident of the reporter thread, once started.
_reporter: Optional[int] = None
_sleep = time.sleep
_monotonic = time.monotonic


def defer(fn: Callable[..., Any], *args: Any) -> None:
    """Run ``fn(*args)`` in the reporter thread, after the jobs queued before.

    Waits for no lock: safe from finalizers, signal handlers, and threads
    that hold or wait for the program's locks.
    """
    _jobs.append((fn, args))
    if _reporter is None and _starting.acquire(False):
        try:
            if _reporter is None:
                _start_reporter()
        finally:
            _starting.release()
    try:
        _wake.release()
    except RuntimeError:  # already released: the reporter will look anyway
        pass


def _start_reporter() -> None:
    """Start the reporter (under ``_starting``) and arrange the drain at exit."""
    global _reporter
    try:
        ident = _thread.start_new_thread(_run_reporter, ())
    except RuntimeError:  # interpreter shutting down: deliver here and now
        _run_jobs()
        return
    internal_threads.add(ident)
    _reporter = ident
    register = getattr(threading, "_register_atexit", None)
    if register is not None:  # before threading joins the non-daemon threads
        try:
            register(drain)
        except RuntimeError:  # already shutting down
            pass
    atexit.register(drain)  # and after, for what they found meanwhile


def _run_reporter() -> None:
    try:  # logging names the thread of a record: make that name say what it is
        threading.current_thread().name = "lockwise-reporter"
    except Exception:
        pass
    while True:
        _wake.acquire()
        _run_jobs()


def _run_jobs() -> None:
    global _delivered, _running
    while True:
        _running = True  # before the pop: flush() must not see "empty and idle"
        try:
            fn, args = _jobs.popleft()
        except IndexError:
            _running = False
            return
        try:
            fn(*args)
        except BaseException:  # each job reports its own errors; never die
            pass
        finally:
            _delivered += 1


def _idle() -> bool:
    return not _jobs and not _running


def flush(timeout: Optional[float] = None) -> bool:
    """Wait until the reporter thread has delivered what was recorded (logging,
    listeners, policy callables) and is idle; True when it is, False after
    ``timeout`` seconds. Do not call it while holding locks a logging handler
    or listener may need."""
    if _idle():
        return True
    if _reporter == _thread.get_ident():
        return False  # the reporter would wait for itself
    deadline = None if timeout is None else _monotonic() + timeout
    delay = 0.0002
    while not _idle():
        if deadline is not None and _monotonic() >= deadline:
            return False
        _sleep(delay)
        delay = min(delay * 2, 0.01)
    return True


def drain() -> None:
    """At exit: deliver what is queued, while the reporter makes progress."""
    while True:
        before = _delivered
        if flush(EXIT_STALL):
            return
        if _delivered == before:
            err = sys.__stderr__  # the process's own stderr: no program code
            try:
                if err is not None:
                    err.write(f"lockwise: {len(_jobs) + 1} report(s) not delivered: "
                              "a logging handler or listener is blocked\n")
            except Exception:
                pass
            return


def _after_fork_in_child() -> None:
    """The reporter does not exist in a child: start afresh (the parent
    delivers what was queued before the fork)."""
    global _wake, _reporter, _delivered, _running, _lock, _starting
    _lock = _thread.RLock()
    _starting = _thread.allocate_lock()
    _jobs.clear()
    _delivered = 0
    _running = False
    _wake = _thread.allocate_lock()
    _wake.acquire()
    _reporter = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
