"""Per-thread bookkeeping: what each thread holds and what it waits for.

This is the hot path's data. Each thread owns one ``ThreadState`` and is the
only writer of its fields (except ``held`` when another thread releases a
Lock it did not acquire, and ``doom`` when a detector picks it as a victim),
so no lock guards them: single attribute stores are atomic under the GIL.

Blocking protocol (the detector in ``_waitfor`` relies on its order):

* to block: ``changes += 1``, then set ``wait_timed`` and ``wait_since``,
  then ``waiting = resource``, then ``wait_seq``;
* to stop blocking: ``waiting = None``, then ``changes += 1``; only then does
  an acquirer record itself as the lock's owner.

So a thread that is registered as waiting on a lock whose owner is recorded
really is blocked, and a detector that reads the same ``changes`` twice knows
the thread stayed registered in between.

``epoch[0]`` is the process-wide counterpart of ``changes``: a new value at
every wait registration or unregistration and every thread exit (and when the
main thread starts waiting for the others at exit). A detector that read the
same value before and after a scan of all threads knows no thread changed its
wait in between, so a scan that found a thread able to run stays true until
the value changes (see ``_waitfor._quiescence``). Each change stores a value
never used before (``itertools.count``), so a store lost to a race between two
threads still leaves a value that differs from the one any reader saw.
"""

from __future__ import annotations

import _thread
import itertools
import os
import threading
import weakref

TYPE_CHECKING = False  # True for type checkers: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Any, Optional

_get_ident = threading.get_ident


#: threading's registries of live and of starting threads, CPython internals
#: that 3.10-3.15 all have (module-level dicts, never rebound; see
#: docs/python-versions.md). Where either is missing, ``REGISTRIES`` is False:
#: threads are then named from ``threading.enumerate()``, and the rules that
#: need to know every thread ("nobody left to run") stay silent.
_active: Optional[dict[int, threading.Thread]] = getattr(threading, "_active", None)
_limbo: Optional[dict[threading.Thread, threading.Thread]] = getattr(threading, "_limbo", None)
REGISTRIES = isinstance(_active, dict) and isinstance(_limbo, dict)
if not REGISTRIES:
    _active = _limbo = None


def registered_thread(ident: Optional[int]) -> Optional[threading.Thread]:
    """The live ``Thread`` of ``ident``, or None."""
    if _active is not None:
        return _active.get(ident)  # type: ignore[arg-type]
    try:
        for thread in threading.enumerate():
            if thread.ident == ident:
                return thread
    except Exception:  # at shutdown, threading may be half torn down
        pass
    return None


def threads_starting() -> bool:
    """True if a thread may be starting (listed in ``_limbo``), or if that
    cannot be known: the callers then assume some thread can still run."""
    return _limbo is None or bool(_limbo)


def threads_registered() -> int:
    """How many threads ``threading`` knows (live and starting); 0 if unknown."""
    if _active is None or _limbo is None:
        return 0
    return len(_active) + len(_limbo)


def _thread_name_now(ident: int) -> str:
    """The name of the thread ``ident``, also while it is still starting (its
    first lock may be threading's own ``_active_limbo_lock``, taken before the
    thread is listed in ``_active``)."""
    thread = _active.get(ident) if _active is not None else None
    if thread is None and _limbo is not None:
        for starting in list(_limbo):
            if getattr(starting, "_ident", None) == ident:
                thread = starting
                break
    return thread.name if thread is not None else f"Thread-{ident}"


class ThreadState:
    """Bookkeeping of one thread. Fields are written only as described above."""

    __slots__ = (
        "ident", "name", "held", "waiting", "wait_timed", "wait_since", "wait_seq", "changes",
        "alive", "doom", "quiet", "uid", "suspect", "_sentinel_ref", "__weakref__",
    )

    def __init__(self, ident: int) -> None:
        self.ident = ident
        #: The thread's name when the state was made; reports use the live
        #: name while the thread runs and this one after it has exited.
        self.name = _thread_name_now(ident)
        #: Locks held, in acquisition order (an RLock appears once).
        self.held: list[Any] = []
        #: What the thread is blocked on: a lock, a condition waiter or a join.
        self.waiting: Any = None
        self.wait_timed = False
        self.wait_since = 0.0
        #: When the current wait was registered, in the process-wide order of
        #: registrations (``next_epoch``): the newest wait of a cycle closed it.
        self.wait_seq = 0
        #: Bumped on every change of ``waiting`` (see the module docstring).
        self.changes = 0
        self.alive = True
        #: A finding set by another thread's detector: raise it when you wake.
        self.doom: Any = None
        #: While > 0, lockwise itself is running (reporting): no order edges.
        self.quiet = 0
        #: Unique for the process's lifetime (thread idents are reused).
        self.uid = next(_uids)
        #: The unproven cycle this blocked thread is in, as ``(key, since,
        #: reported)``, or None (see ``_waitfor``; written by this thread only).
        self.suspect: Any = None
        self._sentinel_ref: Any = None

    def __repr__(self) -> str:
        return f"<ThreadState {self.ident} held={len(self.held)} waiting={self.waiting!r}>"


_uids = itertools.count(1)


def new_uid() -> int:
    """A number never given out before in this process (thread and task ids)."""
    return next(_uids)


#: Every known thread state by ident. Entries of dead threads are removed.
states: dict[int, ThreadState] = {}
#: States of the threads now blocked without a timeout (set.add/discard are
#: atomic): its size is the cheap pre-check of the "nobody left to run" rule.
blocked: set[ThreadState] = set()
#: Idents of lockwise's own threads (the watchdog): never counted as runnable.
internal_threads: set[int] = set()

_local = threading.local()


class _Sentinel:
    """Lives in a thread's ``threading.local``; dies when the thread dies."""

    __slots__ = ("__weakref__",)


#: See the module's docstring: ``epoch[0]`` changes whenever any thread's wait does.
epoch = [0]
next_epoch = itertools.count(1).__next__


def _main_thread_exits() -> None:
    # threading._shutdown: the main thread now waits, unregistered, for the others.
    epoch[0] = next_epoch()


try:
    threading._register_atexit(_main_thread_exits)  # type: ignore[attr-defined]
except (AttributeError, RuntimeError):  # already shutting down
    pass


def _thread_ended(ts: ThreadState) -> None:
    ts.alive = False
    ts.waiting = None
    ts.changes += 1
    blocked.discard(ts)
    epoch[0] = next_epoch()
    if states.get(ts.ident) is ts:
        states.pop(ts.ident, None)


def begin_wait(ts: ThreadState, resource: Any, timed: bool, now: float) -> None:
    """Register ``ts`` as waiting on ``resource``, in the order described above."""
    ts.changes += 1
    ts.wait_timed = timed
    ts.wait_since = now
    ts.waiting = resource
    # Drawn after ``waiting`` is stored: the thread with the newest number
    # drew it after every other thread of a cycle had registered, so its own
    # check (which follows) sees the whole cycle (see ``_waitfor._closer``).
    ts.wait_seq = next_epoch()
    epoch[0] = next_epoch()


def end_wait(ts: ThreadState) -> None:
    """Unregister the wait of ``ts`` (before an acquirer records its ownership)."""
    ts.waiting = None
    ts.changes += 1
    epoch[0] = next_epoch()


def new_state() -> ThreadState:
    """Create (and register) the state of the calling thread."""
    ts = ThreadState(_get_ident())
    sentinel = _Sentinel()

    def ended(_ref: Any) -> None:
        _thread_ended(ts)

    ts._sentinel_ref = weakref.ref(sentinel, ended)
    _local.sentinel = sentinel
    _local.ts = ts
    states[ts.ident] = ts
    return ts


def in_main_interpreter() -> bool:
    """False in a subinterpreter.

    lockwise is per process: the C accelerator keeps process-wide references to
    this interpreter's objects, and environment activation belongs to the
    program's main interpreter only.
    """
    check = getattr(_thread, "_is_main_interpreter", None)  # 3.12+
    if check is not None:
        return bool(check())
    try:
        import _xxsubinterpreters as subinterpreters  # type: ignore[import-not-found]
    except ImportError:
        return True
    return bool(subinterpreters.get_current() == subinterpreters.get_main())


def current_state() -> ThreadState:
    """The calling thread's state (created on first use)."""
    try:
        return _local.ts  # type: ignore[no-any-return]
    except AttributeError:
        return new_state()


def state_of(ident: int) -> Optional[ThreadState]:
    ts = states.get(ident)
    if ts is not None and ts.alive:
        return ts
    return None


def _after_fork_in_child() -> None:
    """Only the forking thread exists in the child: the others are dead."""
    me = _get_ident()
    try:
        mine = _local.ts
    except AttributeError:
        mine = None
    for ts in list(states.values()):
        if ts is not mine:
            ts.alive = False
            ts.waiting = None
    states.clear()
    blocked.clear()
    internal_threads.clear()
    epoch[0] = next_epoch()
    if mine is not None:
        mine.ident = me
        mine.waiting = None
        states[me] = mine


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
