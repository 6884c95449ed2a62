"""Run-time settings, changed through :func:`lockwise.configure`.

The hot path reads plain module attributes of ``settings`` (one attribute
load each); everything else validates and converts before storing.
"""

from __future__ import annotations

import math
import os

TYPE_CHECKING = False  # True for type checkers: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Any, Callable, Optional, Union

    Policy = Union[str, Callable[..., Any]]

_POLICIES = ("raise", "warn", "log", "ignore")


class Settings:
    """The live settings. Attributes are read on hot paths; set them via configure()."""

    def __init__(self) -> None:
        self.on_deadlock: Policy = "raise"
        self.on_lock_order: Policy = "warn"
        self.on_hang: Policy = "log"
        #: A lock held by another thread at os.fork() ("raise" acts as "log":
        #: the fork has happened, and the forking thread did nothing wrong).
        self.on_fork_hazard: Policy = "log"
        #: Master switch for the lock-order graph.
        self.lock_order = True
        #: A blocked thread's first sleep between two deadlock checks; it doubles
        #: after each uneventful check, up to 1 s (see ``_waitfor``).
        self.check_interval = 0.02
        #: How long "every thread is blocked" must hold before it is a deadlock.
        self.confirm_delay = 0.01
        #: Whether an installed Python signal handler may wake a blocked thread
        #: (then "every thread is blocked" is not proof of a deadlock).
        self.signals_wake_main = True
        #: How long a cycle that cannot be proven (through a Lock another thread
        #: may release) must last before it is reported as a hang (never raised).
        self.unproven_after = 5.0
        #: Directory of the inter-process wait-for store (None: $LOCKWISE_SHARED_DIR
        #: or a per-user folder under the system temp directory).
        self.shared_dir: Optional[str] = None


settings = Settings()


def _check_policy(option: str, value: Any) -> Policy:
    if callable(value) or value in _POLICIES:
        return value  # type: ignore[no-any-return]
    raise ValueError(
        f"lockwise.configure: {option}={value!r} is not valid; "
        f"expected one of {', '.join(map(repr, _POLICIES))} or a callable"
    )


def _check_seconds(option: str, value: Any) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if not seconds > 0 or math.isinf(seconds):
        raise ValueError(
            f"lockwise.configure: {option}={value!r} is not valid; "
            "expected a positive number of seconds"
        )
    return seconds


def configure(**options: Any) -> dict[str, Any]:
    """Change settings; return the previous values of the options given.

    Options:

    * ``on_deadlock``: what to do when a deadlock forms: ``"raise"`` (default;
      :class:`DeadlockError` in one thread), ``"warn"``, ``"log"``, ``"ignore"``
      or a callable receiving the :class:`Finding`.
    * ``on_lock_order``: the same for a lock-order inversion (default ``"warn"``;
      ``"raise"`` raises :class:`PotentialDeadlockError` in the acquiring thread).
    * ``on_hang``: the same for a hang found by the watchdog (default ``"log"``).
    * ``on_fork_hazard``: the same for a lockwise lock that another thread
      holds when the process forks (default ``"log"``; ``"raise"`` acts as
      ``"log"``: nothing is raised into the thread that forks).
    * ``lock_order``: record the lock-order graph (default True).
    * ``check_interval``: first sleep, in seconds, between two checks of a
      blocked thread; it doubles after each uneventful check, up to 1 s or
      more when many threads are blocked (default 0.02).
    * ``confirm_delay``: how long every thread must stay blocked before that
      is called a deadlock (default 0.01).
    * ``signals_wake_main``: while a Python signal handler is installed, a
      handler may still run on the main thread and wake any blocked thread,
      so "every thread is blocked" raises nothing (default True). Set it
      False only for a program whose handlers never release, set or notify
      anything a thread waits for.
    * ``unproven_after``: a cycle of waits that lockwise cannot prove (one
      of its Locks was taken by a bare ``acquire()``, so another thread may
      still release it) is reported as a ``hang`` once it has lasted this
      many seconds; it is never raised (default 5).
    * ``shared_dir``: the directory where processes of one machine share their
      wait-for graph for :class:`lockwise.FileLock` (default: the environment
      variable ``LOCKWISE_SHARED_DIR``, else ``<tempdir>/lockwise-<uid>``).

    Findings are always recorded in :func:`lockwise.findings` and logged to the
    ``lockwise`` logger, whatever the policy.
    """
    previous: dict[str, Any] = {}
    checked: dict[str, Any] = {}
    for name, value in options.items():
        if name in ("on_deadlock", "on_lock_order", "on_hang", "on_fork_hazard"):
            checked[name] = _check_policy(name, value)
        elif name in ("check_interval", "confirm_delay", "unproven_after"):
            checked[name] = _check_seconds(name, value)
        elif name in ("lock_order", "signals_wake_main"):
            checked[name] = bool(value)
        elif name == "shared_dir":
            if value is not None and not isinstance(value, (str, os.PathLike)):
                raise ValueError(f"lockwise.configure: shared_dir={value!r} is not valid; "
                                 "expected a directory path or None")
            checked[name] = None if value is None else os.fspath(value)
        else:
            known = ", ".join(sorted(vars(settings)))
            raise TypeError(f"lockwise.configure: unknown option {name!r}; known options: {known}")
    for name, value in checked.items():
        previous[name] = getattr(settings, name)
        setattr(settings, name, value)
    return previous
