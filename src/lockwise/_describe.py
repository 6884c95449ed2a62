"""Turn live objects (locks, waits, threads) into the plain data of findings."""

from __future__ import annotations

from ._findings import LockRef
from ._sites import INTERNAL_FILES, Site, frame_info, in_stdlib, serial_for, state_name
from ._state import ThreadState

TYPE_CHECKING = False  # True for type checkers: typing is not imported at run time
if TYPE_CHECKING:
    from types import FrameType
    from typing import Any, Optional


def kind_of(obj: Any) -> str:
    return str(getattr(obj, "_kind", type(obj).__name__))


def lock_ref(obj: Any, numbered: bool = False) -> LockRef:
    """A LockRef for a lock, condition or semaphore; ``numbered`` adds '#n'."""
    site: Site = obj._site
    name = site.label
    if numbered:
        name = f"{name}#{serial_for(obj)}"
    return LockRef(name, str(site), kind_of(obj))


def lock_refs(objs: list[Any]) -> dict[int, LockRef]:
    """LockRefs by id for distinct objects, numbered where labels repeat."""
    distinct: dict[int, Any] = {}
    for obj in objs:
        distinct.setdefault(id(obj), obj)
    labels: dict[str, int] = {}
    for obj in distinct.values():
        labels[obj._site.label] = labels.get(obj._site.label, 0) + 1
    return {key: lock_ref(obj, labels[obj._site.label] > 1) for key, obj in distinct.items()}


def acquired_at(lock: Any) -> str:
    acq = getattr(lock, "_acq", None)
    if acq is None:
        return "?"
    info = frame_info(acq[0], acq[1])
    return f"{info.filename}:{info.lineno} in {info.function}"


def acquired_from(lock: Any, frame: Optional[FrameType]) -> Optional[str]:
    """The program's own line that led to taking ``lock``, when the lock was
    taken inside the standard library (a logging handler's ``with self.lock``):
    read from the holder's live stack ``frame``. That stack still runs the
    function that took the lock when it took it in a ``with`` block; else
    (``Handler.acquire()``, which returned, on 3.12 and older) the innermost
    function of the same file still running (``Handler.handle``) stands for
    it. None when the lock was taken by the program's own code, or nothing of
    that file is running any more."""
    acq = getattr(lock, "_acq", None)
    if acq is None or frame is None or not in_stdlib(acq[0].co_filename):
        return None
    start = frame
    while frame is not None and frame.f_code is not acq[0]:
        frame = frame.f_back
    if frame is None:
        filename = acq[0].co_filename
        frame = start
        while frame is not None and frame.f_code.co_filename != filename:
            frame = frame.f_back
    while frame is not None:
        code = frame.f_code
        if code.co_filename not in INTERNAL_FILES and not in_stdlib(code.co_filename):
            return f"{code.co_filename}:{frame.f_lineno} in {code.co_name}"
        frame = frame.f_back
    return None


def holder_of(obj: Any) -> Optional[ThreadState]:
    return getattr(obj, "_owner", None)


def name_of(ts: Optional[ThreadState]) -> str:
    """The thread's current name, or its last known name once it has exited."""
    if ts is None:
        return "nobody"
    return state_name(ts)
