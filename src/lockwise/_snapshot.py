"""Introspection of the whole process: who holds what, who waits for what."""

from __future__ import annotations

import gc
import threading

from ._describe import acquired_at, kind_of, lock_refs, name_of
from ._findings import Record
from ._primitives import Lock, RLock
from ._report import render_table
from ._sites import state_name
from ._state import ThreadState, current_state, state_of, states
from ._waitfor import CondWaiter, JoinWait

TYPE_CHECKING = False  # True for type checkers: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Any, Optional, Union


def _state_for(thread: Union[threading.Thread, int, None]) -> Optional[ThreadState]:
    if thread is None:
        return current_state()
    ident = thread if isinstance(thread, int) else thread.ident
    if ident is None:
        return None
    return state_of(ident)


def held_locks(thread: Union[threading.Thread, int, None] = None) -> list[Any]:
    """The lockwise locks ``thread`` (default: the calling thread) holds, oldest first.

    ``thread`` is a ``threading.Thread`` or a thread ident. An RLock appears once
    however deep its recursion.
    """
    ts = _state_for(thread)
    return [] if ts is None else list(ts.held)


class LockInfo(Record):
    """One lock in a snapshot (plain data; the lock itself is not kept alive)."""

    __slots__ = ("name", "site", "type", "locked", "owner", "owner_ident", "count",
                 "acquired_at", "waiters")

    def __init__(self, name: str, site: str, type: str, locked: bool,
                 owner: Optional[str], owner_ident: Optional[int], count: int,
                 acquired_at: Optional[str], waiters: list[str]) -> None:
        self.name = name
        self.site = site
        self.type = type
        self.locked = locked
        self.owner = owner
        self.owner_ident = owner_ident
        self.count = count
        self.acquired_at = acquired_at
        self.waiters = waiters

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


class ThreadInfo(Record):
    """One thread in a snapshot: what it holds and what it waits for."""

    __slots__ = ("name", "ident", "holds", "waiting_for", "waiting_since")

    def __init__(self, name: str, ident: int, holds: list[str], waiting_for: Optional[str],
                 waiting_since: Optional[float]) -> None:
        self.name = name
        self.ident = ident
        self.holds = holds
        self.waiting_for = waiting_for
        self.waiting_since = waiting_since

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


class Snapshot(Record):
    """Every live lockwise lock and every thread that holds or waits for one."""

    __slots__ = ("locks", "threads")

    def __init__(self, locks: Optional[list[LockInfo]] = None,
                 threads: Optional[list[ThreadInfo]] = None) -> None:
        self.locks: list[LockInfo] = [] if locks is None else locks
        self.threads: list[ThreadInfo] = [] if threads is None else threads

    def to_dict(self) -> dict[str, Any]:
        return {"locks": [lock.to_dict() for lock in self.locks],
                "threads": [t.to_dict() for t in self.threads]}

    def __str__(self) -> str:
        rows = [{"lock": {"name": lock.name, "site": lock.site}, "owner": lock.owner,
                 "waiters": lock.waiters} for lock in self.locks if lock.locked or lock.waiters]
        return "\n".join(["lockwise snapshot:"] + render_table(rows))


def _wait_label(res: Any, refs: dict[int, Any]) -> Optional[str]:
    if res is None:
        return None
    if isinstance(res, JoinWait):
        return f"join {res.thread.name}"
    if isinstance(res, CondWaiter):
        ref = refs.get(id(res.cond))
        return f"notify of {ref.name if ref else kind_of(res.cond)}"
    ref = refs.get(id(res))
    return ref.name if ref else repr(res)


def _take(all_locks: bool) -> tuple[Snapshot, list[tuple[ThreadState, int]]]:
    thread_states = [ts for ts in list(states.values()) if ts.alive]
    before = [(ts, ts.changes) for ts in thread_states]
    locks: list[Any] = []
    if all_locks:
        locks = [obj for obj in gc.get_objects() if isinstance(obj, (Lock, RLock))]
    seen = {id(lock) for lock in locks}
    waited: dict[int, list[str]] = {}
    conds: list[Any] = []
    for ts in thread_states:
        for lock in list(ts.held):
            if id(lock) not in seen:
                seen.add(id(lock))
                locks.append(lock)
        res = ts.waiting
        if res is None:
            continue
        if isinstance(res, CondWaiter):
            conds.append(res.cond)
        elif not isinstance(res, JoinWait):
            waited.setdefault(id(res), []).append(state_name(ts))
            if id(res) not in seen:
                seen.add(id(res))
                locks.append(res)
    refs = lock_refs(locks + conds)
    snap = Snapshot()
    for lock in locks:
        owner = lock._owner
        ref = refs[id(lock)]
        snap.locks.append(LockInfo(
            name=ref.name, site=ref.site, type=ref.type, locked=bool(lock._inner.locked()),
            owner=None if owner is None else name_of(owner),
            owner_ident=None if owner is None else owner.ident,
            count=getattr(lock, "_count", 1 if owner is not None else 0),
            acquired_at=acquired_at(lock) if owner is not None else None,
            waiters=waited.get(id(lock), [])))
    for ts in thread_states:
        holds = [refs[id(lock)].name for lock in list(ts.held) if id(lock) in refs]
        res = ts.waiting
        if not holds and res is None:
            continue
        snap.threads.append(ThreadInfo(state_name(ts), ts.ident, holds,
                                       _wait_label(res, refs),
                                       ts.wait_since if res is not None else None))
    return snap, before


def snapshot(all_locks: bool = True) -> Snapshot:
    """A consistent picture of every live lock, its owner and its waiters.

    With ``all_locks=False`` only locks that are held or waited for are listed
    (cheap: no scan of the heap). The snapshot holds names, not the locks.
    Consistent: it is retaken (up to 3 times) while any thread changes what it
    waits for during the reading.
    """
    for _attempt in range(3):
        snap, before = _take(all_locks)
        if all(ts.changes == changes for ts, changes in before):
            return snap
    return snap
