"""lockwise.redis: a lease lock on Redis with fencing tokens and deadlock detection.

Algorithm. ``RedisLock(client, name)`` keeps, under ``prefix`` (default
``lockwise:``):

* ``lock:<name>``: the holder's participant id (``host|pid|thread|nonce``)
  with a TTL (the lease), set by a Lua script only when the key is absent;
* ``info:<name>``: holder details (token, host, pid, thread, sites), same TTL;
* ``fence:<name>``: the last fencing token. Every grant issues
  ``max(stored + 1, server TIME in microseconds)`` and stores it, so tokens
  keep increasing across restarts that lose the counter: without
  persistence (the key is gone), and with RDB (the snapshot holds an older
  counter), since every grant after the restart happens later by the
  server's clock than every grant before it;
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
The acquire, wait and confirmation steps are :mod:`lockwise._shared_lock`'s,
shared with FileLock; RedisLock is their Redis backend.

Connections. lockwise sends its commands on its own connections (made
from the client's connection class and settings: password, TLS, db), one
small pool per server (:class:`_Server`), without redis-py's retries and
with a socket timeout chosen per call: a timed ``acquire(timeout=t)``
gives every call what is left of ``t`` (at least ``CALL_MARGIN``), so it
returns within ``t + CALL_MARGIN`` even when the server is down or stalled
(``SIGSTOP``, a partition). Connection errors and timeouts are retried
until the deadline. Authentication and configuration errors (a wrong or
missing password, ``NOPERM``, ``READONLY``, ``OOM``, ``MISCONF``, an
unknown command) are not: they raise :class:`ServerError` at once, naming
the server. A grant whose reply is lost to a timeout stays on the server
until its TTL expires.

Leases. Each server has its own renewer thread, which renews that server's
held leases every ``ttl/3`` with calls bounded by the lease's remaining
validity: a stalled server never delays the renewal of another server's
locks. A lease is *lost* when a renewal is refused (the key expired or
belongs to someone else) or when no renewal succeeded before the lease
would have expired (the server is unreachable, or the process was paused):
then ``lock.lost`` is True, ``on_lost(lock)`` is called, ``owned()`` is
False and ``release()`` raises :class:`LeaseLostError`. A paused holder
that resumes thus knows, before writing, that it may no longer hold the
lock; the fencing token makes the resource refuse it even if it writes.

Redis restart. The renewer keeps an idle connection to its server and
watches it: when the server closes it (killed, restarted, or crashed), or
a renewal fails to reach it, the server's leases are *unconfirmed*:
``owned()`` is False (``lost`` is not yet True) and renewals are retried
at once and every ``RETRY`` seconds. A renewal that succeeds (the server
kept the lock: AOF, or a network blip) confirms the lease again; a refused
one (the keys vanished: no persistence, or an RDB snapshot without them)
makes it lost. So after a restart the old holder's ``owned()`` is already
False before the server accepts a new holder, when the old connection
was closed by the server's death (same host, or a reset that reaches the
client). When nothing tells the client (a partition that drops packets,
a restart hidden by a proxy), ``owned()`` stays True until the next failed
renewal: at most ``ttl/3`` plus the call's timeout. The fencing token is
the real protection in every case.

Cost. Uncontended acquire and release: one script call each (one round
trip). While held: one renewal per ``ttl/3``, one idle connection and one
thread per server. Blocked: one ``BLPOP`` per release or ``RECHECK``, and
one wait/check script per ``RECHECK``. Lock-order edges: one script call
the first time this object sees a pair.

Limits. One Redis server (not Redis Cluster: the scripts touch keys of
several locks); Redis >= 6.2 (float ``BLPOP`` timeouts). Reentrancy is per
object and thread. Only lock names, sites, host names, pids and thread names
are written. Clock drift between client and server: leases are believed for
``ttl * 0.9`` from the moment the request was sent. Fencing tokens can
repeat only if the counter is lost (a restart without persistence, or with
an RDB snapshot older than the last grants) *and* the server's clock is
then behind the time of the last grant before it (a clock set back, or a
failover to a replica whose clock is behind and which missed the last
writes); or if one lock sustained more than one grant per microsecond.
"""

from __future__ import annotations

import _thread
import hashlib
import json
import os
import select
import sys
import threading
import time
import weakref

import redis as _redis

from ._findings import printable
from ._primitives import _acquire_site, _drop_held
from ._shared_lock import SharedLock, documented
from ._shared_store import HOST, local_links, order_finding, participant, report_order
from ._sites import site_of, state_name, thread_name
from ._state import ThreadState, current_state, internal_threads

TYPE_CHECKING = False  # True for type checkers: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Any, Callable, Optional

__all__ = ["LeaseLostError", "RedisLock", "ServerError"]

#: Longest wait between two checks of a blocked acquire (seconds).
RECHECK = 0.1
#: The least time given to one call to the server (seconds): a timed acquire
#: returns within its timeout plus this margin.
CALL_MARGIN = 0.1
#: Bound of one call when no deadline applies (untimed and non-blocking
#: acquires, release, queries), unless the client's socket_timeout is smaller.
UNTIMED_CALL = 10.0
#: Pause between retries of an unconfirmed lease's renewal (seconds).
RETRY = 0.05
_DRIFT = 0.9
_monotonic = time.monotonic
_exc = _redis.exceptions
_CONN_ERRORS = (_exc.ConnectionError, _exc.TimeoutError, OSError)
#: Errors that no retry can cure: raised at once as ServerError.
_FATAL = (_exc.AuthenticationError, _exc.AuthorizationError, _exc.ResponseError)


class LeaseLostError(RuntimeError):
    """The lease of a RedisLock expired or was taken over while it was held."""


class ServerError(_exc.RedisError):
    """The Redis server refused lockwise's commands for a reason no retry can
    cure: authentication (a wrong or missing password), permissions, or the
    server's configuration. The message names the server; ``__cause__`` is
    redis-py's exception."""


def _fatal(exc: BaseException) -> bool:
    if isinstance(exc, _exc.BusyLoadingError) or not isinstance(exc, _FATAL):
        return False
    # "BUSY Redis is busy running a script": transient, like LOADING.
    return not (isinstance(exc, _exc.ResponseError) and str(exc).startswith("BUSY"))


_ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur then return {0, cur} end
local t = redis.call('TIME')
local token = tonumber(t[1]) * 1000000 + tonumber(t[2])
local last = tonumber(redis.call('GET', KEYS[3]) or '0') or 0
if last >= token then token = last + 1 end
token = string.format('%.0f', token)
redis.call('SET', KEYS[3], token)
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
local links = false
local w = cjson.decode(ARGV[3])
for step = 1, 1000 do
  local nxt
  if w.k == 'lock' then
    nxt = redis.call('GET', prefix .. 'lock:' .. w.t)
    if not nxt then return false end
  else
    nxt = w.t
    links = true
  end
  path[#path + 1] = cjson.encode({who = cur, k = w.k, t = w.t, n = w.n, th = w.th, s = w.s,
                                  holder = nxt})
  if nxt == me then
    -- locks only: the caller raises; its wait goes now, so that another
    -- waiter of the cycle does not see it too (exactly one raises)
    if not links then redis.call('DEL', KEYS[1]) end
    return path
  end
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


def _internal_error(where: str, exc: BaseException) -> None:
    from ._findings import internal_error

    internal_error(where, exc)


class _Server:
    """lockwise's connections to one Redis server, and that server's renewer.

    Connections are made from the client pool's connection class and
    settings, with redis-py's retries switched off (lockwise retries within
    its own deadlines) and the socket timeout set for each call. Shared by
    every RedisLock whose client uses the same connection pool.
    """

    def __init__(self, client: Any) -> None:
        pool = client.connection_pool
        kwargs = dict(pool.connection_kwargs)
        try:
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            kwargs["retry"] = Retry(NoBackoff(), 0)
        except ImportError:  # pragma: no cover - redis-py without Retry: no retries either
            pass
        self._cls = pool.connection_class
        self._kwargs = kwargs
        timeout = kwargs.get("socket_timeout")
        self.untimed = UNTIMED_CALL if not timeout else min(float(timeout), UNTIMED_CALL)
        if kwargs.get("path"):
            self.name = f"unix:{kwargs['path']}"
        else:
            self.name = f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
        self.name += f" db {kwargs.get('db', 0)}"
        self._free: list[Any] = []
        self._mutex = _thread.allocate_lock()
        self._pid = os.getpid()
        self.renewer = _Renewer(self)

    def connection(self, limit: float) -> Any:
        """A connected connection (from the free list, or new) with ``limit``
        as its timeouts; give it back with :meth:`done`."""
        conn = None
        with self._mutex:
            if self._pid != os.getpid():  # forked: the parent's sockets are not ours
                self._free = []
                self._pid = os.getpid()
            if self._free:
                conn = self._free.pop()
        if conn is not None:
            try:  # closed by the server meanwhile (restart, idle timeout)?
                stale = conn.can_read(0)
            except Exception:
                stale = True
            if stale:
                conn.disconnect()
        else:
            conn = self._cls(**self._kwargs)
        conn.socket_timeout = limit
        conn.socket_connect_timeout = limit
        sock = getattr(conn, "_sock", None)
        if sock is not None:
            sock.settimeout(limit)
        try:
            conn.connect()
        except BaseException as exc:
            conn.disconnect()
            self._raise(exc)
        return conn

    def done(self, conn: Any) -> None:
        with self._mutex:
            if self._pid == os.getpid() and len(self._free) < 8:
                self._free.append(conn)
                return
        conn.disconnect()

    def call(self, deadline: Optional[float], *args: Any) -> Any:
        """Run one command, within ``deadline`` (monotonic; at least
        ``CALL_MARGIN``) or ``self.untimed`` seconds when None."""
        limit = self.untimed if deadline is None else max(deadline - _monotonic(), CALL_MARGIN)
        conn = self.connection(limit)
        try:
            conn.send_command(*args)
            result = conn.read_response()
        except _exc.ResponseError as exc:  # the connection is fine
            self.done(conn)
            self._raise(exc)
        except BaseException as exc:
            conn.disconnect()
            self._raise(exc)
        self.done(conn)
        return result

    def _raise(self, exc: BaseException) -> Any:
        if _fatal(exc):
            kind = ("refused authentication" if isinstance(
                exc, (_exc.AuthenticationError, _exc.AuthorizationError,
                      _exc.AuthenticationWrongNumberOfArgsError))
                    else "refused the command")
            raise ServerError(f"the Redis server {self.name} {kind}: {exc} "
                              "(check the client's password and the server's configuration)"
                              ) from exc
        raise exc


_servers: weakref.WeakKeyDictionary[Any, _Server] = weakref.WeakKeyDictionary()
_servers_mutex = _thread.allocate_lock()


def _server_for(client: Any) -> _Server:
    pool = client.connection_pool
    with _servers_mutex:
        server = _servers.get(pool)
        if server is None:
            server = _servers[pool] = _Server(client)
        return server


class _Script:
    """A Lua script run with EVALSHA (EVAL when the server does not know it)."""

    __slots__ = ("server", "source", "sha")

    def __init__(self, server: _Server, source: str) -> None:
        self.server = server
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def __call__(self, keys: list[str], args: list[Any],
                 deadline: Optional[float] = None) -> Any:
        try:
            return self.server.call(deadline, "EVALSHA", self.sha, len(keys), *keys, *args)
        except ServerError as exc:
            if not isinstance(exc.__cause__, _exc.NoScriptError):
                raise
        return self.server.call(deadline, "EVAL", self.source, len(keys), *keys, *args)


class _Renewer:
    """A daemon thread per server renewing that server's held leases.

    It sleeps in ``select`` on an idle connection to the server (readable:
    the server closed it) and on a pipe (a new lock to renew); a closed
    connection or a failed renewal makes the server's leases unconfirmed
    and retried every ``RETRY`` seconds. The thread ends when no lease of
    its server is held.
    """

    def __init__(self, server: _Server) -> None:
        self.server = server
        # Reentrant: a finalizer or signal handler that releases a RedisLock
        # while this thread is inside (e.g. starting the renewer) removes it
        # from ``_due`` under the same mutex.
        self._mutex = _thread.RLock()
        self._due: dict[RedisLock, float] = {}
        # A raw thread, not a threading.Thread: a program joining every thread
        # in threading.enumerate() must not wait for lockwise's renewer.
        self._running = False  # a renewer thread runs in process _pid
        self._ident = 0
        self._pid = 0
        self._pipe: Optional[tuple[int, int]] = None
        self._watch: Any = None

    def add(self, lock: RedisLock, due: float) -> None:
        with self._mutex:
            self._due[lock] = due
            if not self._running or self._pid != os.getpid():
                if self._pid != os.getpid():
                    self._pipe = None  # the parent's: leave its descriptors alone
                    self._watch = None
                self._pid = os.getpid()
                if self._pipe is None:
                    r, w = os.pipe()
                    os.set_blocking(r, False)
                    os.set_blocking(w, False)
                    self._pipe = (r, w)
                self._ident = _thread.start_new_thread(self._run, ())
                self._running = True  # under _mutex: the new thread's exit waits for it
        self.kick()

    def remove(self, lock: RedisLock) -> None:
        with self._mutex:
            self._due.pop(lock, None)

    def reschedule(self, lock: RedisLock, due: float) -> None:
        with self._mutex:
            if lock in self._due:
                self._due[lock] = due

    def kick(self) -> None:
        pipe = self._pipe
        if pipe is not None:
            try:
                os.write(pipe[1], b"!")
            except OSError:  # full: the renewer will look anyway
                pass

    def _run(self) -> None:
        ident = threading.get_ident()
        internal_threads.add(ident)
        try:
            self._loop()
        except BaseException as exc:  # never raised: _loop catches what renewing raises
            with self._mutex:
                self._running = False
            _internal_error("the Redis lease renewer", exc)
        finally:
            # This thread ends: a later thread given the same ident is the
            # program's, and must be seen by the detector and the watchdog.
            internal_threads.discard(ident)

    def _loop(self) -> None:
        while True:
            with self._mutex:
                items = list(self._due.items())
                if not items:
                    self._running = False
                    break
            now = _monotonic()
            pause = min(due for _lock, due in items) - now
            if pause > 0:
                self._sleep(min(pause, 1.0))
                continue
            for lock, due in items:
                if due <= now:
                    try:
                        lock._renew()
                    except Exception as exc:  # never let the renewer die
                        _internal_error("the Redis lease renewer", exc)
                        self.reschedule(lock, _monotonic() + 0.1)
        self._unwatch()

    def _sleep(self, pause: float) -> None:
        pipe = self._pipe
        sock = None
        if self._watch is None:
            try:
                self._watch = self.server.connection(min(max(pause, CALL_MARGIN), 1.0))
            except Exception:  # unreachable: renew (and retry) now
                self._watch = None
                self.unconfirmed()
                return
        if self._watch is not None:
            sock = getattr(self._watch, "_sock", None)
        fds: list[Any] = [pipe[0]] if pipe is not None else []
        if sock is not None:
            fds.append(sock)
        start = _monotonic()
        ready: Any = None
        try:
            if fds:
                ready = select.select(fds, [], [], pause)[0]
            else:
                time.sleep(pause)
        except (OSError, ValueError):
            time.sleep(max(0.0, min(pause, 0.05) - (_monotonic() - start)))
        if pipe is not None:
            try:
                while os.read(pipe[0], 512):
                    pass
            except OSError:
                pass
        if ready and sock is not None and sock in ready:
            # An idle connection becomes readable when the server closes it.
            self._unwatch()
            self.unconfirmed()

    def _unwatch(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            try:
                watch.disconnect()
            except Exception:
                pass

    def unconfirmed(self) -> None:
        """The server may have lost every lease: stop believing them and
        renew them now."""
        now = _monotonic()
        with self._mutex:
            for lock in self._due:
                lock._unconfirmed = True
                self._due[lock] = now


class _HeldView:
    """What ``_waitfor`` reads as the inner lock: locked while a local thread holds it."""

    __slots__ = ("_lock",)

    def __init__(self, lock: RedisLock) -> None:
        self._lock = lock

    def locked(self) -> bool:
        return self._lock._owner is not None


class RedisLock(SharedLock):
    """A lock on a Redis server, with the API of :class:`lockwise.Lock`.

    ``client`` is a ``redis.Redis`` (its own settings: password, TLS, db).
    ``ttl`` is the lease in seconds, renewed while held. ``acquire()`` returns
    the fencing token (a positive int) or False; ``acquire(timeout=t)``
    returns within ``t + CALL_MARGIN`` even when the server does not answer.
    Authentication and configuration errors raise :class:`ServerError` at
    once. ``on_lost(lock)`` is called (in the renewer thread) when the lease
    is lost.
    """

    _kind = "RedisLock"
    _inner_owner = None
    _recheck = RECHECK
    _transient = _CONN_ERRORS
    _retry = RETRY
    #: A try is a round trip that may take CALL_MARGIN: none starts after the
    #: deadline, so that a timed acquire returns within t + CALL_MARGIN.
    _try_at_deadline = False

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
        self._unconfirmed = False
        self._acq: Optional[tuple[Any, int]] = None
        self._serial = 0
        self._sent: set[str] = set()
        self._server = server = _server_for(client)
        self._acquire = _Script(server, _ACQUIRE)
        self._extend = _Script(server, _EXTEND)
        self._release = _Script(server, _RELEASE)
        self._wait_script = _Script(server, _WAIT)
        self._order_script = _Script(server, _ORDER)

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
        """True if the calling thread holds the lock and its lease is valid and
        confirmed (False while the server is unreachable: see the module's
        "Redis restart")."""
        return self._owner is current_state() and not self.lost and not self._unconfirmed

    def locked(self) -> bool:
        """True if anyone holds the lock now (asks the server)."""
        return bool(self._server.call(None, "EXISTS", self._k_lock))

    def holder(self) -> Optional[dict[str, Any]]:
        """The holder's details from the server (host, pid, thread, token, sites)."""
        data = self._server.call(None, "HGETALL", self._k_info)
        if not data:
            return None
        if isinstance(data, list):  # RESP2: a flat list
            data = dict(zip(data[::2], data[1::2]))
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
            elif self._unconfirmed:
                parts.append("LEASE UNCONFIRMED")
        return printable(" ".join(parts) + ">")  # names may hold escapes

    # ---------------------------------------------------------------- acquire / release

    acquire = documented(SharedLock.acquire,
                         "Acquire; return the fencing token (an int > 0), or False.")

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
        self._server.renewer.remove(self)
        token = self._token
        self._token = 0
        if not lost:
            try:
                ok = self._release(keys=[self._k_lock, self._k_info, self._k_wake],
                                   args=[self._who, token, int(self.ttl * 1000)],
                                   deadline=_monotonic() + max(self.ttl, CALL_MARGIN))
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

    def _try_take(self, frame: Any, deadline: Optional[float]
                  ) -> Optional[tuple[int, float, str]]:
        who = participant()
        acq = _acquire_site(frame)
        where = f"{acq[0].co_filename}:{acq[1]}" if acq else "?"
        sent = _monotonic()
        result = self._acquire(
            keys=[self._k_lock, self._k_info, self._k_fence, f"{self.prefix}wait:{who}"],
            args=[who, int(self.ttl * 1000), HOST, os.getpid(),
                  thread_name(threading.get_ident()), str(self._site), where],
            deadline=deadline)
        if int(result[0]) == 1:
            return int(result[1]), sent, who
        return None

    def _granted(self, grant: tuple[int, float, str]) -> int:
        token, sent, who = grant
        self._who = who
        self._token = token
        self._lost = False
        self._unconfirmed = False
        self._valid_until = sent + self.ttl * _DRIFT
        self._server.renewer.add(self, sent + self.ttl / 3)
        return token

    def _again(self) -> int:
        return self._token

    def _give_back(self, ts: ThreadState, grant: tuple[int, float, str]) -> None:
        token, _sent, who = grant
        if self._owner is ts and self._token == token and self._who == who:
            self.release()  # kept: released as such (LeaseLostError if the lease was lost)
            return
        if self._owner is ts:  # kept halfway (an exception came before _granted)
            self._count = 0
            self._owner = None
            _drop_held(ts, self)
        try:  # not kept, so not renewed: the lease expires anyway
            self._release(keys=[self._k_lock, self._k_info, self._k_wake],
                          args=[who, token, int(self.ttl * 1000)],
                          deadline=_monotonic() + CALL_MARGIN)
        except Exception:
            pass

    def _register_and_check(self, timed: bool, deadline: Optional[float]
                            ) -> Optional[list[dict[str, Any]]]:
        return self._check(participant(), timed, deadline)

    def _unregister(self) -> None:
        try:
            self._server.call(_monotonic() + CALL_MARGIN, "DEL",
                              f"{self.prefix}wait:{participant()}")
        except Exception:
            pass  # it expires by itself

    def _pause(self, seconds: float, n: int) -> None:
        """Block on the lock's wake-up list (a release pushes to it)."""
        if seconds > 0.001:
            block = max(round(seconds, 3), 0.001)
            self._server.call(_monotonic() + block + CALL_MARGIN, "BLPOP", self._k_wake,
                              f"{block:.3f}")

    def _checking(self) -> bool:
        return self.detect

    def _same_store(self, other: Any) -> bool:
        return self.detect and isinstance(other, RedisLock) and other.prefix == self.prefix \
            and other.detect

    def _check(self, who: str, timed: bool, deadline: Optional[float]
               ) -> Optional[list[dict[str, Any]]]:
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
        result = self._wait_script(keys=[f"{self.prefix}wait:{who}"], args=args,
                                   deadline=deadline)
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

    def _holds(self, path: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        holds: dict[str, list[dict[str, Any]]] = {}
        for step in path:
            if step["kind"] == "lock":
                holds.setdefault(step["holder"], []).append(
                    {"name": step["name"], "site": step["site"], "key": step["key"],
                     "type": "RedisLock", "acquired_at": "?"})
        return holds

    def _store_label(self) -> str:
        return f"redis:{self._server.name.split(' db ')[0]}/{self.prefix}"

    def _renew(self) -> None:
        """In the renewer thread: extend the lease, within its remaining validity."""
        owner = self._owner
        renewer = self._server.renewer
        if owner is None or self._lost:
            renewer.remove(self)
            return
        sent = _monotonic()
        if sent > self._valid_until:
            self._mark_lost()
            return
        try:
            ok = self._extend(keys=[self._k_lock, self._k_info],
                              args=[self._who, self._token, int(self.ttl * 1000)],
                              deadline=self._valid_until)
        except _CONN_ERRORS:
            self._unconfirmed = True
            if _monotonic() > self._valid_until:
                self._mark_lost()
            else:
                renewer.reschedule(self, _monotonic() + min(self.ttl / 10, RETRY))
            return
        except ServerError as exc:
            self._unconfirmed = True
            _internal_error(f"renewing the lease of {self.name!r}", exc)
            renewer.reschedule(self, _monotonic() + min(self.ttl / 10, 0.5))
            return
        if self._owner is not owner:
            return
        if not ok:
            self._mark_lost()
            return
        self._valid_until = sent + self.ttl * _DRIFT
        self._unconfirmed = False
        renewer.reschedule(self, sent + self.ttl / 3)

    def _mark_lost(self) -> None:
        if self._lost:
            return
        self._lost = True
        self._server.renewer.remove(self)
        callback = self.on_lost
        if callback is not None:
            # The callback is the program's code: while it runs, the renewer
            # thread counts as a thread of the program (one that can run and
            # release what others wait for), not as lockwise's own.
            ident = _thread.get_ident()
            internal = ident in internal_threads
            internal_threads.discard(ident)
            try:
                callback(self)
            except Exception as exc:
                _internal_error(f"the on_lost callback of {self.name!r}", exc)
            finally:
                if internal:
                    internal_threads.add(ident)

    def _note_order(self, shared: list[Any]) -> Optional[BaseException]:
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
            _internal_error("the Redis lock-order graph", exc)
            return None
        if not result:
            return None
        edges = [json.loads(_s(raw)) for raw in result if raw]
        if len({(e["host"], e["pid"]) for e in edges}) < 2:
            return None
        return report_order(order_finding(edges, f"redis/{self.prefix}"))
