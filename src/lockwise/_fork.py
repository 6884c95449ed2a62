"""The fork-safety audit: locks held by other threads when the process forks.

Only the forking thread exists in a child made by ``os.fork()``. A lock that
another thread of the parent held at that moment stays held in the child, by
a thread that does not exist there: the first wait on it never ends (unless
a library resets the lock in the child, as ``logging`` does with its handler
locks; what the lock guards may then be half-updated).

Algorithm. ``os.register_at_fork`` hooks (so multiprocessing's fork and
forkserver start methods and ``subprocess`` with ``preexec_fn`` are covered,
as is any ``os.fork()``):

* ``before`` (the forking thread, other threads running): copy, for every
  other live thread that lockwise knows, its list of held lockwise locks,
  with the owner's state, where it acquired each one (``_acq``, an immutable
  pair) and the code positions of the forking thread's stack. No lock is
  taken, nothing is formatted, nothing can raise out of it.
* ``after_in_parent``: turn that copy into one ``fork-hazard`` finding per
  lock (formatting and recording happen here, after the fork).
* ``after_in_child``: keep, by lock, the id of the finding the parent records,
  so that the deadlock detector (``_waitfor.build_finding``) links a wait on
  such a lock to it (``details["fork_hazard"]``). In a child that
  multiprocessing forks to run a process, the forking thread's own held list
  is emptied (its owners stay): the frames that took them never run again.

Cost: nothing on any lock operation; at a fork, one pass over the known
threads' held lists (O(threads + held locks)); the rest only when a lock is
held by another thread.
"""

from __future__ import annotations

import os
import sys
import threading

from . import _findings
from ._config import settings
from ._findings import Finding, StackInfo
from ._state import _local, states

TYPE_CHECKING = False  # True for type checkers: typing is not imported at run time
if TYPE_CHECKING:
    from types import CodeType
    from typing import Any, Optional

    # (lock, owner state, (code, line) of the acquire or None, owner's name)
    Held = tuple[Any, Any, Optional[tuple[CodeType, int]], str]

_serial = 0
#: Taken by the before hook, consumed by the after hooks: (pid, serial, held,
#: the forking thread's stack as (code, line) pairs, outermost last, its name).
_pending: Optional[tuple[int, int, list[Held], list[tuple[CodeType, int]], str]] = None
#: In a child: id(lock) -> (lock, link), the locks other threads held at the fork.
_inherited: dict[int, tuple[Any, dict[str, Any]]] = {}
_error: Optional[BaseException] = None


def _hazard_id(pid: int, serial: int, index: int) -> str:
    return f"fork-hazard:{pid}:{serial}:{index}"


def _before() -> None:
    """Runs in the forking thread while the others run: never blocks, never raises."""
    global _pending, _serial, _error
    _pending = None
    try:
        try:
            mine = _local.ts
        except AttributeError:
            mine = None
        held: list[Held] = []
        for ts in list(states.values()):
            if ts is mine or not ts.alive:
                continue
            for lock in list(ts.held):
                if getattr(lock, "_cross_process", False):
                    continue  # a multiprocessing lock: its holder releases it in the parent
                if getattr(lock, "_owner", None) is ts:  # not released meanwhile
                    held.append((lock, ts, getattr(lock, "_acq", None), ts.name))
        if not held:
            return
        stack: list[tuple[CodeType, int]] = []
        frame = sys._getframe(1)
        while frame is not None and len(stack) < 60:
            stack.append((frame.f_code, frame.f_lineno))
            frame = frame.f_back  # type: ignore[assignment]
        _serial += 1
        _pending = (os.getpid(), _serial, held, stack, threading.current_thread().name)
    except BaseException as exc:  # noqa: BLE001  never into the program's fork()
        _pending = None
        _error = exc


def _links(pending: tuple[int, int, list[Held], list[tuple[CodeType, int]], str]
           ) -> list[tuple[Any, dict[str, Any]]]:
    from ._describe import lock_ref
    from ._sites import frame_info, state_name

    pid, serial, held, _stack, _forker = pending
    out = []
    for index, (lock, owner, acq, name) in enumerate(held):
        ref = lock_ref(lock)
        where = "?"
        if acq is not None:
            info = frame_info(acq[0], acq[1])
            where = f"{info.filename}:{info.lineno} in {info.function}"
        out.append((lock, {"id": _hazard_id(pid, serial, index), "parent_pid": pid,
                           "lock": ref.to_dict(),
                           "owner": state_name(owner) if owner.alive else (name or "?"),
                           "acquired_at": where}))
    return out


def _reset_by_logging(lock: Any) -> bool:
    """Whether ``logging`` resets ``lock`` in a forked child (a handler's lock,
    or its module lock, held by the forking thread and reset after)."""
    logging = sys.modules.get("logging")
    if logging is None:
        return False
    if lock is getattr(logging, "_lock", None):
        return True
    try:
        handlers = list(getattr(logging, "_at_fork_reinit_lock_weakset", ()))
    except Exception:
        return False
    return any(getattr(h, "lock", None) is lock for h in handlers)


def _after_in_parent() -> None:
    global _pending, _error
    pending, _pending = _pending, None
    error, _error = _error, None
    if error is not None:
        _findings.internal_error("the before-fork hook", error)
    if pending is None:
        return
    try:
        _record(pending)
    except Exception as exc:
        _findings.internal_error("recording a fork hazard", exc)


def _record(pending: tuple[int, int, list[Held], list[tuple[CodeType, int]], str]) -> None:
    from ._describe import lock_ref
    from ._report import FORK_FIX, render_fork_hazard
    from ._sites import INTERNAL_FILES, frame_info

    _pid, _serial_, _held, stack, forker = pending
    frames = [frame_info(code, line) for code, line in reversed(stack)
              if code.co_filename not in INTERNAL_FILES]
    for lock, link in _links(pending):
        reset = _reset_by_logging(lock)
        lock_name = link["lock"]["name"]
        if reset:
            summary = (f"{forker} forked while {link['owner']} held {lock_name}; logging "
                       "resets this lock in the child, but what it guards may be half-updated")
        else:
            summary = (f"{forker} forked while {link['owner']} held {lock_name}: in the "
                       "child it stays held by a thread that does not exist there, and the "
                       "first wait on it never ends")
        finding = Finding(
            kind="fork-hazard", summary=summary, threads=[forker, link["owner"]],
            locks=[lock_ref(lock)],
            stacks=[StackInfo(forker, "fork() called here", frames)],
            details={**link, "forking_thread": forker, "reset_in_child": reset, "fix": FORK_FIX},
            key=("fork-hazard", link["id"]),
        )
        finding.text = render_fork_hazard(finding)
        if _findings.record(finding):
            policy = settings.on_fork_hazard
            _findings.apply_policy(finding, "log" if policy == "raise" else policy)


#: Where multiprocessing forks a process that never returns to the forking
#: thread's frames (it runs the process's target and ``os._exit``s): the fork
#: start method's ``Popen._launch`` and the fork server's loop.
_STARTERS = {("popen_fork.py", "_launch"), ("forkserver.py", "main")}


def _starts_a_process(frame: Any) -> bool:
    code = frame.f_code
    filename = code.co_filename
    return ((os.path.basename(filename), code.co_name) in _STARTERS
            and os.path.basename(os.path.dirname(filename)) == "multiprocessing")


def _after_in_child() -> None:
    global _pending, _error
    pending, _pending = _pending, None
    _error = None
    _inherited.clear()
    try:
        # The hook runs inside os.fork(): the frame above is its caller. In a
        # multiprocessing child the forking thread's locks stay held for good
        # by frames that never run again: they order nothing the child takes
        # (a manager's Server.mutex, held around a Pool's start, was ordered
        # before every lock of the pool's workers). Their owner stays: a wait
        # on one is still this thread's own deadlock.
        caller = sys._getframe(1)
        ts = getattr(_local, "ts", None)
        if ts is not None and ts.held and _starts_a_process(caller):
            ts.held.clear()
    except Exception as exc:
        _findings.internal_error("forgetting the locks held across a process start", exc)
    if pending is None:
        return
    try:
        for lock, link in _links(pending):
            _inherited[id(lock)] = (lock, link)
    except Exception as exc:
        _findings.internal_error("linking the locks held at fork", exc)


def link_of(lock: Any) -> Optional[dict[str, Any]]:
    """In a forked child: the fork-hazard link of ``lock`` if another thread
    of the parent held it at the fork, else None."""
    entry = _inherited.get(id(lock))
    if entry is None or entry[0] is not lock:
        return None
    return entry[1]


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before, after_in_parent=_after_in_parent,
                        after_in_child=_after_in_child)
