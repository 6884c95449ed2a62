"""Make ``threading`` (and the modules built on it) produce lockwise locks.

``install()`` replaces the factories in the ``threading`` module; modules
that look them up at call time (``queue``, ``concurrent.futures``,
``logging`` handlers, ``threading.Event``/``Barrier``/``Thread``) then build
on lockwise. Locks created before ``install()`` stay as they were: that
includes ``logging``'s module lock and the import machinery's locks.
Calls nest: the patch is removed by the matching last ``uninstall()``.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator

from ._condition import BoundedSemaphore, Condition, Semaphore
from ._primitives import Lock, RLock

_ORIGINALS: dict[str, Any] = {
    name: getattr(threading, name)
    for name in ("Lock", "RLock", "Condition", "Semaphore", "BoundedSemaphore")
}
_REPLACEMENTS: dict[str, Any] = {
    "Lock": Lock, "RLock": RLock, "Condition": Condition,
    "Semaphore": Semaphore, "BoundedSemaphore": BoundedSemaphore,
}
_depth = 0
_hooks: list[Any] = []


def add_install_hook(hook: Any) -> None:
    """Call ``hook(installing: bool)`` on the first install and last uninstall."""
    _hooks.append(hook)


def install() -> None:
    """Make ``threading.Lock`` and friends produce lockwise primitives from now on."""
    global _depth
    _depth += 1
    if _depth == 1:
        for name, value in _REPLACEMENTS.items():
            setattr(threading, name, value)
        for hook in _hooks:
            hook(True)


def uninstall() -> None:
    """Undo one :func:`install`; the last one restores ``threading``."""
    global _depth
    if _depth == 0:
        return
    _depth -= 1
    if _depth == 0:
        for name, value in _ORIGINALS.items():
            setattr(threading, name, value)
        for hook in _hooks:
            hook(False)


def is_installed() -> bool:
    return _depth > 0


@contextlib.contextmanager
def installed() -> Iterator[None]:
    """``with lockwise.installed():`` installs for the block."""
    install()
    try:
        yield
    finally:
        uninstall()
