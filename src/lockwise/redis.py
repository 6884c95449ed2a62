"""lockwise.redis: a lease lock on Redis with fencing tokens and deadlock detection.

Algorithm. ``RedisLock(client, name)`` keeps, under ``prefix`` (default
``lockwise:``):

* ``lock:<name>``: the holder's participant id (``host|pid|thread|nonce``)
  with a TTL (the lease), set by a Lua script only when the key is absent;
* ``info:<name>``: holder details (token, host, pid, thread, sites), same TTL;
* ``fence:<name>``: the fencing counter. Every grant takes ``INCR``; the
  counter is seeded from the server clock in microseconds when missing, so
  tokens keep increasing even after a restart of a Redis without persistence;
* ``wake:<name>``: a list a release pushes to; waiters ``BLPOP`` it (bounded
  by ``RECHECK`` seconds, the fallback re-check for expired leases and for
  the deadlock check), so a blocked acquire does not poll;
* ``wait:<participant>``: what a blocked participant waits for (JSON), with
  a TTL refreshed on every re-check, so a dead waiter's record vanishes;
* ``order:<name>`` (sets) and ``order-info``: the lock-order graph.

The renew, release and acquire scripts compare the stored holder id and
token with the caller's, so a client can never extend or release a lock it
does not hold. Registering a wait and the cycle check are one Lua script
(atomic on the server): it follows ``wait:`` records and ``lock:`` holders
from the caller; returning to the caller is a deadlock, and that caller
raises :class:`lockwise.DeadlockError` naming every participant and lock.
Waits of the process's threads on local lockwise locks are published as
``thread -> thread`` links, so a cycle mixing local and Redis locks is found.

Leases. A background thread per process renews every held lease each
``ttl/3``. A lease is *lost* when a renewal is refused (the key expired or
belongs to someone else) or when no renewal succeeded before the lease
would have expired (the server is unreachable, or the process was paused):
then ``lock.lost`` is True, ``on_lost(lock)`` is called, ``owned()`` is
False and ``release()`` raises :class:`LeaseLostError`. A paused holder
that resumes thus knows, before writing, that it may no longer hold the
lock; the fencing token makes the resource refuse it even if it writes.

Redis restart. Without persistence the lock keys vanish: the lock is free
at once, the holder's next renewal is refused (lost, as above), and the
next grant has a larger token (clock-seeded counter). Waiters retry through
connection errors until their timeout (an untimed acquire keeps retrying).

Cost. Uncontended acquire and release: one script call each (one round
trip). While held: one renewal per ``ttl/3``. Blocked: one ``BLPOP`` per
release or ``RECHECK``, and one wait/check script per ``RECHECK``.
Lock-order edges: one script call the first time this object sees a pair.

Limits. One Redis server (not Redis Cluster: the scripts touch keys of
several locks); Redis >= 6.2 (float ``BLPOP`` timeouts). Reentrancy is per
object and thread. Only lock names, sites, host names, pids and thread names
are written. Clock drift between client and server: leases are believed for
``ttl * 0.9`` from the moment the request was sent.
"""

from __future__ import annotations

import _thread
import json
import os
import sys
import threading
import time

import redis as _redis

from . import _order
from ._config import settings
from ._errors import DeadlockError
from ._findings import printable
from ._primitives import _acquire_site, _check_acquire_args, _drop_held, _Introspection
from ._shared_store import (
    HOST,
    deadlock_finding,
    local_links,
    order_finding,
    participant,
    raise_deadlock,
    report_order,
)
from ._sites import site_of, state_name, thread_name
from ._state import ThreadState, begin_wait, current_state, end_wait, internal_threads

TYPE_CHECKING = False  # True for type checkers: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Any, Callable, Optional

__all__ = ["LeaseLostError", "RedisLock"]

#: Longest wait between two checks of a blocked acquire (seconds).
RECHECK = 0.1
_DRIFT = 0.9
_monotonic = time.monotonic
_CONN_ERRORS = (_redis.exceptions.ConnectionError, _redis.exceptions.TimeoutError)


class LeaseLostError(RuntimeError):
    """The lease of a RedisLock expired or was taken over while it was held."""


_ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur then return {0, cur} end
if not redis.call('GET', KEYS[3]) then
  local t = redis.call('TIME')
  redis.call('SET', KEYS[3], t[1] .. string.format('%06d', tonumber(t[2])))
end
local token = redis.call('INCR', KEYS[3])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'owner', ARGV[1], 'token', token, 'host', ARGV[3], 'pid', ARGV[4],
           'thread', ARGV[5], 'site', ARGV[6], 'acquired_at', ARGV[7])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[4])
return {1, token}
"""

_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('HGET', KEYS[2], 'token') == ARGV[2] then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  return 1
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('HGET', KEYS[2], 'token') ~= ARGV[2] then
  return 0
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('RPUSH', KEYS[3], '1')
redis.call('PEXPIRE', KEYS[3], ARGV[3])
return 1
"""

_WAIT = """
local prefix, me = ARGV[1], ARGV[2]
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
local i = 6
while i < #ARGV do
  redis.call('SET', prefix .. 'wait:' .. ARGV[i], ARGV[i + 1], 'PX', ARGV[4])
  i = i + 2
end
if ARGV[5] == '1' then return false end
local path = {}
local seen = {}
local cur = me
local w = cjson.decode(ARGV[3])
for step = 1, 1000 do
  local nxt
  if w.k == 'lock' then
    nxt = redis.call('GET', prefix .. 'lock:' .. w.t)
    if not nxt then return false end
  else
    nxt = w.t
  end
  path[#path + 1] = cjson.encode({who = cur, k = w.k, t = w.t, n = w.n, th = w.th, s = w.s,
                                  holder = nxt})
  if nxt == me then return path end
  if seen[nxt] then return false end
  seen[nxt] = true
  local v = redis.call('GET', prefix .. 'wait:' .. nxt)
  if not v then return false end
  w = cjson.decode(v)
  if w.timed then return false end
  cur = nxt
end
return false
"""

_ORDER = """
local prefix, b = ARGV[1], ARGV[2]
local i = 3
while i < #ARGV do
  local a = ARGV[i]
  if a ~= b and redis.call('SADD', prefix .. 'order:' .. a, b) == 1 then
    redis.call('HSET', prefix .. 'order-info', a .. '\\n' .. b, ARGV[i + 1])
    local parent = {}
    parent[b] = b
    local stack = {b}
    local found = false
    while #stack > 0 and not found do
      local n = table.remove(stack)
      for _, m in ipairs(redis.call('SMEMBERS', prefix .. 'order:' .. n)) do
        if parent[m] == nil then
          parent[m] = n
          if m == a then found = true break end
          stack[#stack + 1] = m
        end
      end
    end
    if found then
      local nodes = {a}
      local x = a
      while x ~= b do x = parent[x]; table.insert(nodes, 1, x) end
      local out = {redis.call('HGET', prefix .. 'order-info', a .. '\\n' .. b)}
      for j = 1, #nodes - 1 do
        local edge = nodes[j] .. '\\n' .. nodes[j + 1]
        out[#out + 1] = redis.call('HGET', prefix .. 'order-info', edge)
      end
      return out
    end
  end
  i = i + 2
end
return false
"""


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _Renewer:
    """One daemon thread per process renewing every held lease."""

    def __init__(self) -> None:
        # Reentrant: a finalizer or signal handler that releases a RedisLock
        # while this thread is inside (e.g. starting the renewer) removes it
        # from ``_due`` under the same mutex.
        self._mutex = _thread.RLock()
        self._wake = _thread.allocate_lock()
        self._wake.acquire()
        self._due: dict[RedisLock, float] = {}
        self._thread: Optional[threading.Thread] = None
        self._pid = 0

    def add(self, lock: RedisLock, due: float) -> None:
        with self._mutex:
            self._due[lock] = due
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="lockwise-redis-renewer",
                                                daemon=True)
                self._thread.start()
        self.kick()

    def remove(self, lock: RedisLock) -> None:
        with self._mutex:
            self._due.pop(lock, None)

    def kick(self) -> None:
        try:
            self._wake.release()
        except RuntimeError:
            pass

    def _run(self) -> None:
        internal_threads.add(threading.get_ident())
        while True:
            with self._mutex:
                items = list(self._due.items())
            now = _monotonic()
            pause = min([due for _lock, due in items], default=now + 1.0) - now
            if pause > 0:
                self._wake.acquire(True, min(pause, 1.0))
                continue
            for lock, due in items:
                if due <= now:
                    try:
                        lock._renew()
                    except Exception as exc:  # never let the renewer die
                        from ._findings import internal_error

                        internal_error("the Redis lease renewer", exc)
                        with self._mutex:
                            if lock in self._due:
                                self._due[lock] = _monotonic() + 0.1


_renewer = _Renewer()


class _HeldView:
    """What ``_waitfor`` reads as the inner lock: locked while a local thread holds it."""

    __slots__ = ("_lock",)

    def __init__(self, lock: RedisLock) -> None:
        self._lock = lock

    def locked(self) -> bool:
        return self._lock._owner is not None


class RedisLock(_Introspection):
    """A lock on a Redis server, with the API of :class:`lockwise.Lock`.

    ``client`` is a ``redis.Redis`` (its own settings: password, TLS, db).
    ``ttl`` is the lease in seconds, renewed while held. ``acquire()`` returns
    the fencing token (a positive int) or False. ``on_lost(lock)`` is called
    (in the renewer thread) when the lease is lost.
    """

    _shared = True
    _kind = "RedisLock"
    _inner_owner = None

    def __init__(self, client: Any, name: str, ttl: float = 10.0, reentrant: bool = False,
                 prefix: str = "lockwise:", *, on_lost: Optional[Callable[[RedisLock], Any]] = None,
                 detect: bool = True) -> None:
        if not name or not isinstance(name, str):
            raise ValueError("RedisLock needs a non-empty name")
        if not ttl > 0:
            raise ValueError("ttl must be a positive number of seconds")
        self.client = client
        self._name = name
        self.ttl = float(ttl)
        self.reentrant = bool(reentrant)
        self.prefix = prefix
        self.on_lost = on_lost
        self.detect = detect
        self._site = site_of(sys._getframe(1))
        self._k_lock = f"{prefix}lock:{name}"
        self._k_info = f"{prefix}info:{name}"
        self._k_fence = f"{prefix}fence:{name}"
        self._k_wake = f"{prefix}wake:{name}"
        self._inner = _HeldView(self)
        self._owner: Optional[ThreadState] = None
        self._who = ""
        self._count = 0
        self._token = 0
        self._valid_until = 0.0
        self._lost = False
        self._acq: Optional[tuple[Any, int]] = None
        self._serial = 0
        self._sent: set[str] = set()
        self._acquire = client.register_script(_ACQUIRE)
        self._extend = client.register_script(_EXTEND)
        self._release = client.register_script(_RELEASE)
        self._wait_script = client.register_script(_WAIT)
        self._order_script = client.register_script(_ORDER)

    # ---------------------------------------------------------------- introspection

    @property
    def name(self) -> str:
        return self._name

    @property
    def token(self) -> int:
        """The fencing token of the current grant (0 when not held here)."""
        return self._token if self._owner is not None else 0

    @property
    def lost(self) -> bool:
        """True once the lease of the current grant is known or presumed lost."""
        if self._owner is not None and not self._lost and _monotonic() > self._valid_until:
            self._mark_lost()
        return self._lost

    @property
    def count(self) -> int:
        return self._count

    def owned(self) -> bool:
        """True if the calling thread holds the lock and its lease is still valid."""
        return self._owner is current_state() and not self.lost

    def locked(self) -> bool:
        """True if anyone holds the lock now (asks the server)."""
        return bool(self.client.exists(self._k_lock))

    def holder(self) -> Optional[dict[str, Any]]:
        """The holder's details from the server (host, pid, thread, token, sites)."""
        data = self.client.hgetall(self._k_info)
        if not data:
            return None
        return {_s(k): _s(v) for k, v in data.items()}

    def __repr__(self) -> str:
        held = self._owner is not None
        parts = [f"<{'locked' if held else 'unlocked'} lockwise.redis.RedisLock object at "
                 f"{id(self):#x} {self.name!r} ({self._site})"]
        if held and self._owner is not None:
            parts.append(f"owner={state_name(self._owner)} token={self._token}")
            if self.acquired_at:
                parts.append(f"acquired at {self.acquired_at}")
            if self._lost:
                parts.append("LEASE LOST")
        return printable(" ".join(parts) + ">")  # names may hold escapes

    # ---------------------------------------------------------------- acquire / release

    def acquire(self, blocking: bool = True, timeout: float = -1) -> Any:
        """Acquire; return the fencing token (an int > 0), or False."""
        _check_acquire_args(blocking, timeout)
        ts = current_state()
        if self._owner is ts and self.reentrant:
            self._count += 1
            return self._token
        forever = blocking and timeout == -1
        if forever and ts.held and settings.lock_order:
            error = _order.note(ts, self)
            if error is not None:
                raise error
        frame = sys._getframe(1)
        deadline = None if (not blocking or timeout < 0) else _monotonic() + timeout
        who = participant()
        try:
            got = self._try(who, frame)
        except _CONN_ERRORS:
            if not blocking:
                raise
            got = None  # a blocking acquire retries until its timeout
        if got is None and blocking:
            got = self._wait(ts, who, deadline, frame)
        if got is None:
            return False
        token, sent = got
        self._owner = ts
        self._who = who
        self._count = 1
        self._token = token
        self._lost = False
        self._valid_until = sent + self.ttl * _DRIFT
        self._acq = _acquire_site(frame)
        shared = [h for h in ts.held if isinstance(h, RedisLock) and h.prefix == self.prefix
                  and h is not self and h.detect]
        ts.held.append(self)
        _renewer.add(self, sent + self.ttl / 3)
        if forever and shared and self.detect and settings.lock_order:
            error = self._note_order(shared)
            if error is not None:
                self.release()
                raise error
        return token

    def __enter__(self) -> Any:
        return self.acquire()

    def release(self) -> None:
        """Release; raises LeaseLostError (after forgetting the lock) if the lease was lost."""
        ts = current_state()
        if self._owner is not ts:
            raise RuntimeError("cannot release un-acquired lock")
        if self._count > 1:
            self._count -= 1
            return
        lost = self._lost
        self._count = 0
        self._owner = None
        _drop_held(ts, self)
        _renewer.remove(self)
        token = self._token
        self._token = 0
        if not lost:
            try:
                ok = self._release(keys=[self._k_lock, self._k_info, self._k_wake],
                                   args=[self._who, token, int(self.ttl * 1000)])
            except _CONN_ERRORS as exc:
                raise LeaseLostError(f"could not release {self.name!r}: {exc}") from exc
            lost = not ok
        if lost:
            self._lost = True
            raise LeaseLostError(f"the lease of RedisLock {self.name!r} (token {token}) was "
                                 "lost before release: another holder may have written")

    def __exit__(self, *args: object) -> None:
        self.release()

    # ---------------------------------------------------------------- internals

    def _try(self, who: str, frame: Any) -> Optional[tuple[int, float]]:
        acq = _acquire_site(frame)
        where = f"{acq[0].co_filename}:{acq[1]}" if acq else "?"
        sent = _monotonic()
        result = self._acquire(
            keys=[self._k_lock, self._k_info, self._k_fence, f"{self.prefix}wait:{who}"],
            args=[who, int(self.ttl * 1000), HOST, os.getpid(),
                  thread_name(threading.get_ident()), str(self._site), where])
        if int(result[0]) == 1:
            return int(result[1]), sent
        return None

    def _wait(self, ts: ThreadState, who: str, deadline: Optional[float],
              frame: Any) -> Optional[tuple[int, float]]:
        timed = deadline is not None
        begin_wait(ts, self, timed, _monotonic())
        registered = False
        pending: Any = None
        next_check = 0.0
        try:
            while True:
                doom = ts.doom
                if doom is not None:
                    ts.doom = None
                    raise DeadlockError(str(doom), doom)
                now = _monotonic()
                try:
                    if self.detect and now >= next_check:
                        registered = True
                        path = self._check(who, timed)
                        next_check = now + RECHECK
                        if path is None:
                            pending = None
                        else:
                            cycle = frozenset((s["who"], s["key"]) for s in path)
                            if all(s["kind"] == "lock" for s in path) or pending == cycle:
                                self._deadlock(path, frame)
                            pending = cycle
                    got = self._try(who, frame)
                    if got is not None:
                        registered = False  # the acquire script dropped the wait record
                        return got
                    now = _monotonic()
                    if deadline is not None and now >= deadline:
                        return None
                    block = RECHECK if not self.detect else next_check - now
                    if deadline is not None:
                        block = min(block, deadline - now)
                    if block > 0.001:
                        self.client.blpop([self._k_wake], timeout=max(round(block, 3), 0.001))
                except _CONN_ERRORS:
                    now = _monotonic()
                    if deadline is not None and now >= deadline:
                        return None
                    pause = 0.05 if deadline is None else min(0.05, deadline - now)
                    time.sleep(max(pause, 0.0))
        finally:
            end_wait(ts)
            if registered:
                try:
                    self.client.delete(f"{self.prefix}wait:{who}")
                except Exception:
                    pass

    def _check(self, who: str, timed: bool) -> Optional[list[dict[str, Any]]]:
        me: dict[str, Any] = {"k": "lock", "t": self.name, "n": self.name,
                              "th": thread_name(threading.get_ident()), "s": str(self._site)}
        if timed:
            me["timed"] = True
        args: list[Any] = [self.prefix, who, json.dumps(me), int(max(RECHECK * 30, 3) * 1000),
                           "1" if timed else "0"]
        for lwho, lthread, target, lname in local_links(self):
            if lwho != who:
                args += [lwho, json.dumps({"k": "thread", "t": target, "n": lname, "th": lthread,
                                           "s": "local lock"})]
        result = self._wait_script(keys=[f"{self.prefix}wait:{who}"], args=args)
        if not result:
            return None
        path = []
        for raw in result:
            step = json.loads(_s(raw))
            path.append({"who": step["who"], "thread": step.get("th", "?"),
                         "kind": "lock" if step["k"] == "lock" else "thread",
                         "key": step["t"], "name": step.get("n", step["t"]),
                         "site": step.get("s", "?"), "holder": step["holder"],
                         "type": "RedisLock"})
        return path

    def _deadlock(self, path: list[dict[str, Any]], frame: Any) -> None:
        holds: dict[str, list[dict[str, Any]]] = {}
        for step in path:
            if step["kind"] == "lock":
                holds.setdefault(step["holder"], []).append(
                    {"name": step["name"], "site": step["site"], "key": step["key"],
                     "type": "RedisLock", "acquired_at": "?"})
        server = self.client.connection_pool.connection_kwargs
        store = f"redis:{server.get('host', '?')}:{server.get('port', '?')}/{self.prefix}"
        finding = deadlock_finding(path, holds, store, frame)
        if raise_deadlock(finding):
            raise DeadlockError(str(finding), finding)

    def _renew(self) -> None:
        owner = self._owner
        if owner is None or self._lost:
            _renewer.remove(self)
            return
        sent = _monotonic()
        try:
            ok = self._extend(keys=[self._k_lock, self._k_info],
                              args=[self._who, self._token, int(self.ttl * 1000)])
        except _CONN_ERRORS:
            if _monotonic() > self._valid_until:
                self._mark_lost()
            else:
                with _renewer._mutex:
                    if self in _renewer._due:
                        _renewer._due[self] = _monotonic() + min(self.ttl / 10, 0.2)
            return
        if self._owner is not owner:
            return
        if not ok:
            self._mark_lost()
            return
        self._valid_until = sent + self.ttl * _DRIFT
        with _renewer._mutex:
            if self in _renewer._due:
                _renewer._due[self] = sent + self.ttl / 3

    def _mark_lost(self) -> None:
        if self._lost:
            return
        self._lost = True
        _renewer.remove(self)
        callback = self.on_lost
        if callback is not None:
            try:
                callback(self)
            except Exception as exc:
                from ._findings import internal_error

                internal_error(f"the on_lost callback of {self.name!r}", exc)

    def _note_order(self, shared: list[RedisLock]) -> Optional[BaseException]:
        new = [h for h in shared if h.name not in self._sent]
        if not new:
            return None
        thread = thread_name(threading.get_ident())
        args: list[Any] = [self.prefix, self.name]
        for h in new:
            self._sent.add(h.name)
            args += [h.name, json.dumps({"a": h.name, "b": self.name, "a_name": h.name,
                                         "b_name": self.name, "a_site": str(h._site),
                                         "b_site": str(self._site), "host": HOST,
                                         "pid": os.getpid(),
                                         "thread": f"{thread} (pid {os.getpid()} on {HOST})"})]
        try:
            result = self._order_script(keys=[], args=args)
        except Exception as exc:
            from ._findings import internal_error

            internal_error("the Redis lock-order graph", exc)
            return None
        if not result:
            return None
        edges = [json.loads(_s(raw)) for raw in result if raw]
        if len({(e["host"], e["pid"]) for e in edges}) < 2:
            return None
        return report_order(order_finding(edges, f"redis/{self.prefix}"))
