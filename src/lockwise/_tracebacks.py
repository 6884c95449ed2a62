"""Tracebacks of DeadlockError that end at the user's line.

A DeadlockError is raised deep inside lockwise (the slow path of an acquire,
the wait loop); as it propagates, each of those frames adds a line to its
traceback, so the program's report would end in lockwise's internals instead
of the user's ``with lock:``. While a session runs (``lockwise run``,
``LOCKWISE=1``), the exception hooks that print uncaught exceptions
(``sys.excepthook`` and ``threading.excepthook``) drop the trailing frames
that are lockwise's own before printing. Only DeadlockError is touched; a
program that catches it sees the whole traceback, as raised.
"""

from __future__ import annotations

import os
import sys
import threading

from ._errors import DeadlockError

TYPE_CHECKING = False  # True for type checkers: typing is not imported at run time
if TYPE_CHECKING:
    from types import TracebackType
    from typing import Any, Optional

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep

_saved: Optional[tuple[Any, Any]] = None


def _is_ours(tb: TracebackType) -> bool:
    return tb.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR)


def trim(exc: BaseException) -> None:
    """Cut the trailing lockwise frames off ``exc``'s traceback (DeadlockError only)."""
    if not isinstance(exc, DeadlockError):
        return
    entries = []
    tb = exc.__traceback__
    while tb is not None:
        entries.append(tb)
        tb = tb.tb_next
    keep = len(entries)
    while keep > 1 and _is_ours(entries[keep - 1]):
        keep -= 1
    if keep < len(entries):
        entries[keep - 1].tb_next = None


def _report_first() -> None:
    """Let the reporter thread print the deadlock's report before the
    traceback is printed: both write to stderr, and the hook writes in pieces
    that would otherwise interleave with the report. Bounded: the traceback
    is printed anyway if the reporter is stuck."""
    from ._findings import flush

    flush(1.0)


def _sys_hook(exc_type: Any, exc: Any, tb: Any) -> Any:
    try:
        if isinstance(exc, DeadlockError):
            _report_first()
        trim(exc)
        tb = exc.__traceback__ if isinstance(exc, DeadlockError) else tb
    except Exception:
        pass
    assert _saved is not None
    return _saved[0](exc_type, exc, tb)


def _thread_hook(args: Any) -> Any:
    try:
        if isinstance(args.exc_value, DeadlockError):
            _report_first()
            trim(args.exc_value)
            args = threading.ExceptHookArgs(
                [args.exc_type, args.exc_value, args.exc_value.__traceback__, args.thread])
    except Exception:
        pass
    assert _saved is not None
    return _saved[1](args)


def install() -> None:
    """Wrap the two exception hooks (once)."""
    global _saved
    if _saved is not None:
        return
    _saved = (sys.excepthook, threading.excepthook)
    sys.excepthook = _sys_hook
    threading.excepthook = _thread_hook


def uninstall() -> None:
    """Restore the hooks, unless the program replaced ours meanwhile."""
    global _saved
    if _saved is None:
        return
    if sys.excepthook is _sys_hook:
        sys.excepthook = _saved[0]
    if threading.excepthook is _thread_hook:
        threading.excepthook = _saved[1]
    _saved = None
