"""Exceptions and warnings that lockwise raises into user code.

By policy these are the only things lockwise ever raises into the program it
watches: internal failures are reported on stderr, never raised.
"""

from __future__ import annotations

TYPE_CHECKING = False  # True for type checkers: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Optional

    from ._findings import Finding


class DeadlockError(RuntimeError):
    """Raised in one thread (or task) whose wait would never end.

    ``finding`` holds the structured report; ``str(error)`` is the text report.
    """

    def __init__(self, message: str, finding: Optional[Finding] = None) -> None:
        super().__init__(message)
        self.finding = finding


class PotentialDeadlockError(DeadlockError):
    """Raised for a lock-order inversion when ``configure(on_lock_order="raise")``."""


class PotentialDeadlockWarning(RuntimeWarning):
    """Warned once per distinct lock-order cycle (a deadlock that can happen)."""


class DeadlockWarning(RuntimeWarning):
    """Warned for an actual deadlock when ``configure(on_deadlock="warn")``."""


class HangWarning(RuntimeWarning):
    """Warned for a hang when ``configure(on_hang="warn")``."""
