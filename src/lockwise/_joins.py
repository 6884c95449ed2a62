"""``Thread.join()`` as a wait: "thread X waits for thread Y".

``Thread.join`` blocks on a lock made in C that no patch reaches, so lockwise
wraps the method itself (once, when lockwise is imported): an untimed join of
a live thread is registered in the wait-for relation and sliced into short
timed joins so the joining thread keeps checking. Timed joins, joins of
finished threads and misuse go straight to the original method.
"""

from __future__ import annotations

import threading

from ._state import current_state
from ._waitfor import JoinWait, block_on

TYPE_CHECKING = False  # True for type checkers: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Any, Optional

_original_join: Any = threading.Thread.join


def _join(self: threading.Thread, timeout: Optional[float] = None) -> None:
    if timeout is not None or not self.is_alive() or self.ident == threading.get_ident():
        return _original_join(self, timeout)  # type: ignore[no-any-return]
    wait = JoinWait(self, _original_join)
    block_on(current_state(), wait, wait, None)
    return None


_join.__doc__ = _original_join.__doc__
_join.__wrapped__ = _original_join  # type: ignore[attr-defined]


def track_joins(enabled: bool = True) -> None:
    """Record untimed joins as waits (the default once lockwise is imported)."""
    threading.Thread.join = _join if enabled else _original_join  # type: ignore[method-assign]


track_joins(True)
