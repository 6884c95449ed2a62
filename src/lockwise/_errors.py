"""Exceptions and warnings that lockwise raises into user code.

By policy these are the only things lockwise ever raises into the program it
watches: internal failures are reported on stderr, never raised.
"""

from __future__ import annotations

TYPE_CHECKING = False  # True for type checkers: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Optional

    from ._findings import Finding


#: True while a session prints every finding's report on stderr (``lockwise
#: run``): a DeadlockError's message is then its first line only.
reports_on_stderr = False


class DeadlockError(RuntimeError):
    """Raised in one thread (or task) whose wait would never end.

    ``finding`` holds the structured report (``str(error.finding)`` is the full
    text report); ``str(error)`` is the short one: who holds and wants what,
    at which line, and the fix.
    """

    def __init__(self, message: str, finding: Optional[Finding] = None) -> None:
        if finding is not None:
            try:
                from ._report import render_brief

                message = render_brief(finding)
                if reports_on_stderr:  # printed once is enough
                    message = message.split("\n", 1)[0] + " (reported on stderr by lockwise)"
            except Exception:  # never lose the error for its message
                pass
        super().__init__(message)
        self.finding = finding


class PotentialDeadlockError(DeadlockError):
    """Raised for a lock-order inversion when ``configure(on_lock_order="raise")``."""


class PotentialDeadlockWarning(RuntimeWarning):
    """Warned once per distinct lock-order cycle (a deadlock that can happen).

    The message is one line; ``finding`` holds the full report.
    """

    finding: Optional[Finding] = None


class DeadlockWarning(RuntimeWarning):
    """Warned for an actual deadlock when ``configure(on_deadlock="warn")``.

    The message is one line; ``finding`` holds the full report.
    """

    finding: Optional[Finding] = None


class HangWarning(RuntimeWarning):
    """Warned for a hang when ``configure(on_hang="warn")``.

    The message is one line; ``finding`` holds the full report.
    """

    finding: Optional[Finding] = None
