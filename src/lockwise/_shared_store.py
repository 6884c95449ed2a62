"""The wait-for graph shared by the processes of one machine (SQLite, WAL mode).

Used by :class:`lockwise.FileLock`; :mod:`lockwise.redis` reuses the helpers
(participants, local links, findings) with its own Lua store.

Model. A *participant* is one thread of one process: ``host|pid|ident|nonce``
(the nonce, fresh per process and after ``fork``, keeps a recycled pid from
inheriting a dead process's records). The store keeps three tables:

* ``holders(lock -> who)``: the participant holding each shared lock. A
  holder row is written right after the OS lock is taken and deleted right
  before it is released, so a row always names the real holder;
* ``waits(who -> lock | participant)``: what a blocked participant waits for.
  Waits on shared locks are registered by the waiter itself. Waits on local
  locks (a thread of the same process blocked on a ``lockwise.Lock``) are
  *links* ``thread -> thread`` published by any thread of that process that
  is waiting on a shared lock, so that a cycle mixing local and shared locks
  is visible where both halves are;
* ``order_edges(a -> b)``: "b was acquired while holding a", for shared locks.

Algorithm. Registering a wait runs in one ``BEGIN IMMEDIATE`` transaction:
remove the records of dead local processes (``os.kill(pid, 0)``), replace the
caller's links, insert the wait, then follow ``waits``/``holders`` from the
caller. Each participant waits for at most one thing and each lock has one
holder, so the walk is a chain: returning to the caller is a deadlock, and
since the check is atomic with the insert, of two processes closing a cycle
at the same time exactly one sees it. Blocked waiters re-check periodically
(the holder may publish after the waiter looked). A cycle that goes through
a link (a snapshot, possibly stale) must be seen on two consecutive checks.

Cost. One SQLite write transaction per FileLock acquire and release (WAL,
``synchronous=OFF``: no fsync; tens of microseconds) and one per check of a
blocked waiter (every ``RECHECK`` seconds). Chains cost one indexed lookup
per hop. Lock-order edges cost a transaction only the first time this
process sees the pair.

Trust. The store lives in the per-user directory (:mod:`lockwise._files`:
``LOCKWISE_SHARED_DIR`` or ``configure(shared_dir=...)``, else
``$XDG_RUNTIME_DIR/lockwise``, else ``$TMPDIR/lockwise-<uid>``), used only
if it is a directory, not a symlink, owned by this user and not writable by
group or others; the database file is opened first with ``O_NOFOLLOW`` and
must be a regular file owned by this user. Anyone who can write there could
read every lock name, pid and thread name and make a correct program raise
DeadlockError, so an unfit directory is refused as a whole: one line on
stderr and a note in the report, and no detection across processes (the
locks still exclude each other).

Waits on the store are bounded: SQLite's busy timeout is ``BUSY_TIMEOUT``
seconds. A store that stays locked longer (a process stopped inside a
transaction) is switched off in this process, with a warning and a note;
FileLock keeps excluding through ``flock``. Every ``RETRY_STALLED`` seconds
a FileLock call tries it again without waiting; once it answers, this
process's rows (possibly stale) are removed, detection is back on and a
second line says so.

Limits. Processes must agree on the directory and see the same host name;
records of dead processes are recognised only on the same host (pid check).
Processes of different users never share a store. Only lock keys and names,
creation sites, host names, pids and thread names are stored.
"""

from __future__ import annotations

import _thread
import os
import socket
import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager

from . import _files, _findings
from ._config import settings
from ._errors import DeadlockError, PotentialDeadlockError
from ._findings import Finding, FrameInfo, LockRef, StackInfo
from ._sites import thread_name, user_stack
from ._state import ThreadState, states
from ._waitfor import ANY_THREAD, release_evidence

TYPE_CHECKING = False  # True for type checkers: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Any, Iterator, Optional

HOST = socket.gethostname()
#: Seconds between two checks of a blocked waiter of a shared lock.
RECHECK = 0.05
#: Longest wait, in seconds, for another process's store transaction.
BUSY_TIMEOUT = 1.0
#: Seconds between two attempts to use again a store that stalled.
RETRY_STALLED = 5.0
_nonce = uuid.uuid4().hex[:8]


def participant(ident: Optional[int] = None) -> str:
    """The id of a thread of this process in shared stores."""
    if ident is None:
        ident = threading.get_ident()
    return f"{HOST}|{os.getpid()}|{ident}|{_nonce}"


def parse_participant(who: str) -> tuple[str, int, int]:
    host, pid, ident, _nonce_ = (who.split("|") + ["", "0", "0", ""])[:4]
    try:
        return host, int(pid), int(ident)
    except ValueError:
        return host, 0, 0


pid_alive = _files.pid_alive

#: The lock type in reports, by key prefix (``file:``, ``mp:Lock:``...).
_TYPES = {"file": "FileLock", "mp": "multiprocessing"}


def type_of(key: str) -> str:
    """The type of the shared lock ``key`` names, for reports."""
    prefix, _, rest = key.partition(":")
    if prefix == "mp":
        return "multiprocessing." + rest.partition(":")[0]
    return _TYPES.get(prefix, "FileLock")


def local_links(skip: Any = None) -> list[tuple[str, str, str, str]]:
    """Waits of this process's threads on *local* locks, as thread -> thread.

    Returns (who, thread name, target participant, lock name). Threads that
    wait on a shared lock publish their own wait and are skipped; so are timed
    waits, Condition waits and locks used as signals.
    """
    links = []
    for ts in list(states.values()):
        res = ts.waiting
        if res is None or ts.wait_timed or not ts.alive or res is skip:
            continue
        if getattr(res, "_shared", False):
            target_ts = getattr(res, "_inner_owner", None)
        else:
            target_ts = getattr(res, "_owner", None)
            if hasattr(res, "thread") and hasattr(res, "_join"):  # a join
                target_ts = states.get(res.thread.ident or 0)
            # Only a lock that nobody but its owner will release is an edge
            # (see _waitfor.release_evidence): not one taken by a bare acquire()
            # (maybe a hand-off) or seen released by another thread.
            elif target_ts is not None and (getattr(res, "_site", None) is None
                                            or release_evidence(res) == ANY_THREAD):
                continue
        if not isinstance(target_ts, ThreadState) or target_ts is ts or not target_ts.alive:
            continue
        site = getattr(res, "_site", None)
        name = site.label if site is not None else type(res).__name__
        links.append((participant(ts.ident), thread_name(ts.ident),
                      participant(target_ts.ident), name))
    return links


# ---------------------------------------------------------------- findings


def _frames_of(site: str) -> list[dict[str, Any]]:
    path, _, line = site.rpartition(":")
    try:
        return [FrameInfo(path, int(line), "?").to_dict()] if path else []
    except ValueError:
        return []


def label(who: str, thread: str) -> str:
    host, pid, _ident = parse_participant(who)
    return f"{thread} (pid {pid} on {host})"


def deadlock_finding(path: list[dict[str, Any]], holds: dict[str, list[dict[str, Any]]],
                     store: str, frame: Any) -> Finding:
    """The finding for a cycle of participants; the first one is the victim.

    ``path`` entries: who, thread, kind ('lock' or 'thread'), key, name, site,
    holder (the next participant). ``holds`` maps who to its held shared locks
    (dicts with name, site, key, since).
    """
    from ._report import render_deadlock

    labels = {step["who"]: label(step["who"], step["thread"]) for step in path}
    entries = []
    locks: list[LockRef] = []
    for step in path:
        who = step["who"]
        held = []
        for h in holds.get(who, []):
            ref = LockRef(h["name"], h.get("site", "?"), h.get("type", "shared lock"))
            held.append({"lock": ref.to_dict(), "acquired_at": h.get("acquired_at", "?")})
            if ref not in locks:
                locks.append(ref)
        target = labels.get(step["holder"], step["holder"])
        if step["kind"] == "lock":
            ref = LockRef(step["name"], step.get("site", "?"), step.get("type", "shared lock"))
            if ref not in locks:
                locks.append(ref)
            wait = {"kind": "lock", "lock": ref.to_dict(), "timed": False, "held_by": target,
                    "held_by_self": step["holder"] == who}
        else:
            wait = {"kind": "lock", "lock": {"name": step["name"], "site": "local lock"},
                    "timed": False, "held_by": target, "held_by_self": False}
        host, pid, ident = parse_participant(who)
        entries.append({"thread": labels[who], "ident": ident, "host": host, "pid": pid,
                        "alive": True, "holds": held, "waits_for": wait})
    names = [labels[step["who"]] for step in path]
    if len(path) == 1:
        summary = f"{names[0]} waits for a shared lock it holds itself"
    else:
        summary = f"{', '.join(names)} wait for each other in a cycle across processes"
    victim = names[0]
    stacks = [StackInfo(victim, "raises DeadlockError here", user_stack(frame))]
    key = ("deadlock", store, frozenset((s["who"], s["key"]) for s in path))
    finding = Finding(kind="deadlock", summary=summary, threads=names, locks=locks,
                      stacks=stacks,
                      details={"rule": "cycle", "store": store, "distributed": True,
                               "victim": victim, "threads": entries},
                      key=key)
    finding.text = render_deadlock(finding)
    return finding


def raise_deadlock(finding: Finding) -> bool:
    """Record and apply the deadlock policy; True when the caller must raise."""
    ts_quiet = _quiet()
    try:
        new = _findings.record(finding)
        return bool(new and _findings.apply_policy(finding, settings.on_deadlock))
    finally:
        ts_quiet()


def _quiet() -> Any:
    from ._state import current_state

    ts = current_state()
    ts.quiet += 1

    def done() -> None:
        ts.quiet -= 1

    return done


def order_finding(edges: list[dict[str, Any]], store: str) -> Finding:
    """A lock-order finding from store edges (from, to, thread label, site)."""
    from ._report import render_lock_order

    cycle = []
    threads: list[str] = []
    stacks = []
    for e in edges:
        first = LockRef(e["a_name"], e.get("a_site", "?"), "shared lock")
        second = LockRef(e["b_name"], e.get("b_site", "?"), "shared lock")
        who = e["thread"]
        cycle.append({"from": first.to_dict(), "to": second.to_dict(), "thread": who,
                      "first_stack": _frames_of(e.get("a_site", "")),
                      "second_stack": _frames_of(e.get("b_site", ""))})
        if who not in threads:
            threads.append(who)
        stacks.append(StackInfo(who, f"acquired {second.name} while holding {first.name}",
                                [FrameInfo.from_dict(f) for f in _frames_of(e.get("b_site", ""))]))
    locks = [LockRef.from_dict(c["from"]) for c in cycle]
    names = " -> ".join([lock.name for lock in locks] + [locks[0].name])
    finding = Finding(
        kind="lock-order", summary=f"lock-order inversion across processes: {names}",
        threads=threads, locks=locks, stacks=stacks,
        details={"cycle": cycle, "single_thread": False, "level": "shared", "store": store},
        key=("lock-order", store, frozenset((e["a"], e["b"]) for e in edges)))
    finding.text = render_lock_order(finding)
    return finding


def report_order(finding: Finding) -> Optional[BaseException]:
    """Record a cross-process lock-order finding; an exception to raise, if any."""
    done = _quiet()
    try:
        if not _findings.record(finding):
            return None
        try:
            if _findings.apply_policy(finding, settings.on_lock_order):
                return PotentialDeadlockError(str(finding), finding)
        except Exception as exc:  # a warning turned into an error
            return exc
        return None
    finally:
        done()


# ---------------------------------------------------------------- SQLite store

_SCHEMA = """
CREATE TABLE IF NOT EXISTS holders(
    lock TEXT PRIMARY KEY, name TEXT, who TEXT, host TEXT, pid INTEGER, thread TEXT,
    site TEXT, acquired_at TEXT, since REAL);
CREATE TABLE IF NOT EXISTS waits(
    who TEXT PRIMARY KEY, host TEXT, pid INTEGER, thread TEXT, kind TEXT, target TEXT,
    name TEXT, site TEXT, timed INTEGER, publisher INTEGER, since REAL);
CREATE TABLE IF NOT EXISTS order_edges(
    a TEXT, b TEXT, a_name TEXT, b_name TEXT, a_site TEXT, b_site TEXT, host TEXT,
    pid INTEGER, thread TEXT, PRIMARY KEY (a, b));
CREATE TABLE IF NOT EXISTS lazy_holders(
    lock TEXT PRIMARY KEY, who TEXT, host TEXT, pid INTEGER, evidence INTEGER);
CREATE INDEX IF NOT EXISTS holders_pid ON holders(host, pid);
CREATE INDEX IF NOT EXISTS waits_pid ON waits(host, pid);
"""


def default_dir() -> str:
    return _files.default_user_dir(settings.shared_dir)


class StoreUnavailable(Exception):
    """The store cannot be used; ``str()`` is the one line for the user."""


_OFF = "deadlock detection across processes is off (FileLocks still exclude each other)"


class SQLiteStore:
    """One database file; a connection per thread (and per process after fork).

    ``off`` is None while the store is used, else why it is not (then the
    FileLocks on it skip it; see :meth:`disable`)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.path = os.path.join(directory, "waitfor.sqlite3")
        self._local = threading.local()
        self.off: Optional[str] = None
        self._stalled = False
        self._retry_at = 0.0

    def disable(self, reason: str) -> None:
        """Stop using the store in this process; say why once (a note)."""
        if self.off is None:
            self.off = reason
            _findings.note(reason)

    def _check(self) -> None:
        """Refuse a directory or database file another user could control."""
        problem = _files.ensure_private_dir(self.directory)
        if problem is not None:
            merges = self.directory == _files.default_user_dir(settings.shared_dir)
            raise StoreUnavailable(_files.refusal(self.directory, problem, merges))
        try:
            os.close(_files.open_private(self.path))
        except OSError as exc:
            raise StoreUnavailable(f"not using the shared wait-for store {self.path}: "
                                   f"{exc.strerror or exc} (expected a regular file owned by "
                                   f"this user, not a symlink); {_OFF}") from None

    def _conn(self) -> sqlite3.Connection:
        local = self._local
        conn: Optional[sqlite3.Connection] = getattr(local, "conn", None)
        if conn is not None and local.pid == os.getpid():
            return conn
        self._check()
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None,
                               check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")
        # Two processes opening a fresh store at once: switching it to WAL can
        # fail with "database is locked" at once, without the busy handler
        # (SQLite does not wait there), so retry for a while instead of
        # turning detection off.
        deadline = time.monotonic() + 2 * BUSY_TIMEOUT
        while True:
            try:
                if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=OFF")
                conn.executescript(_SCHEMA)  # per connection: the file may be new
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.005)
        local.conn = conn
        local.pid = os.getpid()
        return conn

    def call(self, method: str, *args: Any) -> Any:
        """``self.method(*args)``, or None when the store is off or goes off
        now (refused, or locked longer than ``BUSY_TIMEOUT``: a warning and a
        note say so). Other failures propagate."""
        if self.off is not None and not (self._stalled and self._answers_again()):
            return None
        try:
            return getattr(self, method)(*args)
        except StoreUnavailable as exc:
            self.disable(str(exc))
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            self._stalled = True
            self._retry_at = time.monotonic() + RETRY_STALLED
            self.disable(f"the shared wait-for store {self.path} stayed locked for more "
                         f"than {BUSY_TIMEOUT:g}s (a process holding it is stopped or stuck); "
                         "deadlock detection across processes is off until it answers again "
                         "(FileLocks still exclude each other)")
        return None

    def _answers_again(self) -> bool:
        """Whether a stalled store can be used again (tried without waiting,
        every ``RETRY_STALLED`` seconds). If so, first remove every row of
        this process: those written before the stall may be stale (a lock
        released or a wait ended while the store was off) and could show
        other processes a cycle that is not there."""
        now = time.monotonic()
        if now < self._retry_at:
            return False
        self._retry_at = now + RETRY_STALLED
        me = os.getpid()
        try:
            conn = self._conn()
            conn.execute("PRAGMA busy_timeout=0")
            try:
                if conn.in_transaction:  # see tx()
                    conn.execute("ROLLBACK")
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    conn.execute("DELETE FROM holders WHERE host=? AND pid=?", (HOST, me))
                    conn.execute("DELETE FROM lazy_holders WHERE host=? AND pid=?", (HOST, me))
                    conn.execute("DELETE FROM waits WHERE host=? AND (pid=? OR publisher=?)",
                                 (HOST, me, me))
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            finally:
                conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")
        except (sqlite3.OperationalError, StoreUnavailable):
            return False
        self._stalled = False
        self.off = None
        _findings.note(f"the shared wait-for store {self.path} answers again; deadlock "
                       "detection across processes is back on (locks taken while it was "
                       "off are not in it)")
        return True

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        if conn.in_transaction:
            # Left open by an asynchronous exception (a signal handler's, Ctrl-C)
            # that landed where no handler could roll it back: undo it now.
            conn.execute("ROLLBACK")
        try:  # BEGIN inside: an exception just after it returns still rolls back
            conn.execute("BEGIN IMMEDIATE")
            yield conn
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # -- holders

    def add_holder(self, key: str, name: str, site: str, acquired_at: str,
                   who: Optional[str] = None) -> None:
        who = who or participant()
        with self.tx() as c:
            c.execute("DELETE FROM waits WHERE who=?", (who,))
            c.execute("INSERT OR REPLACE INTO holders VALUES (?,?,?,?,?,?,?,?,?)",
                      (key, name, who, HOST, os.getpid(), thread_name(threading.get_ident()),
                       site, acquired_at, time.time()))

    def remove_holder(self, key: str) -> None:
        with self.tx() as c:
            c.execute("DELETE FROM holders WHERE lock=? AND who=?", (key, participant()))

    def holder(self, key: str) -> Optional[dict[str, Any]]:
        row = self._conn().execute(
            "SELECT who, host, pid, thread, site, acquired_at FROM holders WHERE lock=?",
            (key,)).fetchone()
        if row is None:
            return None
        return dict(zip(("who", "host", "pid", "thread", "site", "acquired_at"), row))

    # -- waits

    def _clean_dead(self, c: sqlite3.Connection) -> None:
        pids = {pid for (pid,) in c.execute(
            "SELECT pid FROM holders WHERE host=? UNION SELECT pid FROM waits WHERE host=? "
            "UNION SELECT publisher FROM waits WHERE host=?", (HOST, HOST, HOST))}
        for pid in pids:
            if pid is not None and not pid_alive(pid):
                c.execute("DELETE FROM holders WHERE host=? AND pid=?", (HOST, pid))
                c.execute("DELETE FROM lazy_holders WHERE host=? AND pid=?", (HOST, pid))
                c.execute("DELETE FROM waits WHERE host=? AND (pid=? OR publisher=?)",
                          (HOST, pid, pid))

    def wait(self, key: str, name: str, site: str, timed: bool,
             skip: Any = None) -> Optional[tuple[list[dict[str, Any]], bool]]:
        """Register (or refresh) the caller's wait and look for a cycle through it.

        Returns (cycle path, uses links) or None. The caller's wait row is
        left in place (:meth:`end_wait` removes it), except when a cycle of
        locks only is found: the caller raises, and of the waiters of one
        cycle exactly one must.
        """
        who = participant()
        links = local_links(skip)
        with self.tx() as c:
            self._clean_dead(c)
            self._register(c, who, thread_name(threading.get_ident()), key, name, site, timed,
                           links, time.time())
            if timed:
                return None
            found = self._walk(c, who)
            if found is not None and not found[1]:
                # The caller raises: its wait goes in this transaction, so
                # that another waiter of the cycle re-checking before the
                # caller unwinds does not see the cycle (and raise) too.
                c.execute("DELETE FROM waits WHERE who=?", (who,))
            return found

    def _register(self, c: sqlite3.Connection, who: str, thread: str, key: str, name: str,
                  site: str, timed: bool, links: list[tuple[str, str, str, str]],
                  now: float) -> None:
        """Replace this process's links with ``links`` (from :func:`local_links`,
        skipping any from ``who`` itself: its wait is the row inserted here),
        then insert or replace the wait row of ``who`` (thread ``thread``) for
        the shared lock ``key``; every row is stamped ``now``.

        Runs in the caller's transaction ``c`` and commits nothing, so that
        what the caller does in it before (removing dead processes' rows,
        publishing lazy holders) and after (the walk) is one atomic step.
        """
        me = os.getpid()
        c.execute("DELETE FROM waits WHERE host=? AND publisher=? AND kind='thread'",
                  (HOST, me))
        for lwho, lthread, target, lname in links:
            if lwho == who:
                continue
            c.execute("INSERT OR IGNORE INTO waits VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                      (lwho, HOST, me, lthread, "thread", target, lname, "", 0, me, now))
        c.execute("INSERT OR REPLACE INTO waits VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                  (who, HOST, me, thread, "lock", key, name, site, int(timed), me, now))

    def _walk(self, c: sqlite3.Connection,
              me: str) -> Optional[tuple[list[dict[str, Any]], bool]]:
        path: list[dict[str, Any]] = []
        seen = {me}
        cur = me
        used_links = False
        for _ in range(10000):
            row = c.execute("SELECT thread, kind, target, name, site, timed FROM waits "
                            "WHERE who=?", (cur,)).fetchone()
            if row is None or row[5]:
                return None
            thread, kind, target, name, site, _timed = row
            if kind == "lock":
                h = c.execute("SELECT who FROM holders WHERE lock=?", (target,)).fetchone()
                if h is None:
                    return None
                nxt = h[0]
            else:
                used_links = True
                nxt = target
            path.append({"who": cur, "thread": thread, "kind": kind, "key": target,
                         "name": name, "site": site, "holder": nxt, "type": type_of(target)})
            if nxt == me:
                return path, used_links
            if nxt in seen:
                return None
            seen.add(nxt)
            cur = nxt
        return None

    def holds_of(self, whos: list[str]) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        c = self._conn()
        for who in whos:
            out[who] = [{"name": n, "site": s, "acquired_at": a, "key": k, "type": type_of(k)}
                        for k, n, s, a in c.execute(
                            "SELECT lock, name, site, acquired_at FROM holders WHERE who=?",
                            (who,))]
        return out

    # -- holders published by their waits (multiprocessing locks: _mp)

    def wait_holding(self, key: str, name: str, site: str,
                     holds: list[tuple[str, str, str, str, int]], skip: Any = None
                     ) -> Optional[tuple[list[dict[str, Any]], bool, bool]]:
        """:meth:`wait` (untimed) for a lock whose holders are not in the store
        until they wait themselves: the caller's held locks of that kind
        (``holds``: key, name, site, acquired_at, evidence) are published in the
        same transaction, as *lazy* holders that :meth:`end_wait_holding`
        removes with the wait. While its wait row stands, the caller's thread
        is blocked and cannot release them; a release by another thread or
        process removes the row first (:meth:`drop_lazy_holder`).

        Returns (cycle path, uses links, provable) or None. ``provable`` is
        False when a lazy holder on the cycle took its lock by a bare
        ``acquire()`` (evidence 0, ``_waitfor.ANY_THREAD``): another process
        may still release it (a hand-off), so the caller does not raise, and
        its wait stays registered.
        """
        who = participant()
        me = os.getpid()
        thread = thread_name(threading.get_ident())
        links = local_links(skip)
        now = time.time()
        with self.tx() as c:
            self._clean_dead(c)
            self._drop_lazy(c, who)
            for hkey, hname, hsite, hat, evidence in holds:
                c.execute("INSERT OR REPLACE INTO holders VALUES (?,?,?,?,?,?,?,?,?)",
                          (hkey, hname, who, HOST, me, thread, hsite, hat, now))
                c.execute("INSERT OR REPLACE INTO lazy_holders VALUES (?,?,?,?,?)",
                          (hkey, who, HOST, me, int(evidence)))
            self._register(c, who, thread, key, name, site, False, links, now)
            found = self._walk(c, who)
            if found is None:
                return None
            path, used_links = found
            provable = True
            for step in path:
                if step["kind"] != "lock":
                    continue
                row = c.execute("SELECT evidence FROM lazy_holders WHERE lock=?",
                                (step["key"],)).fetchone()
                if row is not None and not row[0]:
                    provable = False
            if provable and not used_links:
                c.execute("DELETE FROM waits WHERE who=?", (who,))  # as in wait()
            return path, used_links, provable

    def _drop_lazy(self, c: sqlite3.Connection, who: str) -> None:
        c.execute("DELETE FROM holders WHERE who=? AND lock IN "
                  "(SELECT lock FROM lazy_holders WHERE who=?)", (who, who))
        c.execute("DELETE FROM lazy_holders WHERE who=?", (who,))

    def end_wait_holding(self) -> None:
        """End the caller's wait and withdraw the holders it published."""
        who = participant()
        with self.tx() as c:
            self._drop_lazy(c, who)
            c.execute("DELETE FROM waits WHERE who=?", (who,))
            c.execute("DELETE FROM waits WHERE host=? AND publisher=? AND kind='thread'",
                      (HOST, os.getpid()))

    def drop_lazy_holder(self, key: str) -> None:
        """``key`` is released by a thread that is not its publishing holder."""
        with self.tx() as c:
            row = c.execute("SELECT who FROM lazy_holders WHERE lock=?", (key,)).fetchone()
            if row is not None:
                c.execute("DELETE FROM holders WHERE lock=? AND who=?", (key, row[0]))
                c.execute("DELETE FROM lazy_holders WHERE lock=?", (key,))

    def end_wait(self) -> None:
        who = participant()
        with self.tx() as c:
            c.execute("DELETE FROM waits WHERE who=?", (who,))
            c.execute("DELETE FROM waits WHERE host=? AND publisher=? AND kind='thread'",
                      (HOST, os.getpid()))

    def waits(self) -> list[dict[str, Any]]:
        cols = ("who", "host", "pid", "thread", "kind", "target", "name", "site", "timed")
        rows = self._conn().execute(f"SELECT {', '.join(cols)} FROM waits").fetchall()
        return [dict(zip(cols, row)) for row in rows]

    def holders(self) -> list[dict[str, Any]]:
        cols = ("lock", "name", "who", "host", "pid", "thread", "site", "acquired_at")
        rows = self._conn().execute(f"SELECT {', '.join(cols)} FROM holders").fetchall()
        return [dict(zip(cols, row)) for row in rows]

    # -- lock order

    def note_order(self, held: list[tuple[str, str, str]], new: tuple[str, str, str],
                   thread: str) -> Optional[list[dict[str, Any]]]:
        """Add edges held -> new (key, name, site); a cycle closed across processes."""
        b, b_name, b_site = new
        with self.tx() as c:
            for a, a_name, a_site in held:
                if a == b:
                    continue
                cur = c.execute(
                    "INSERT OR IGNORE INTO order_edges VALUES (?,?,?,?,?,?,?,?,?)",
                    (a, b, a_name, b_name, a_site, b_site, HOST, os.getpid(), thread))
                if cur.rowcount != 1:
                    continue
                back = self._order_path(c, b, a)
                if back is None:
                    continue
                keys = [(a, b)] + back
                edges = []
                for x, y in keys:
                    row = c.execute("SELECT a_name, b_name, a_site, b_site, host, pid, thread "
                                    "FROM order_edges WHERE a=? AND b=?", (x, y)).fetchone()
                    edges.append({"a": x, "b": y, "a_name": row[0], "b_name": row[1],
                                  "a_site": row[2], "b_site": row[3], "host": row[4],
                                  "pid": row[5],
                                  "thread": f"{row[6]} (pid {row[5]} on {row[4]})"})
                if len({(e["host"], e["pid"]) for e in edges}) >= 2:
                    return edges
        return None

    def _order_path(self, c: sqlite3.Connection, start: str,
                    goal: str) -> Optional[list[tuple[str, str]]]:
        """Edges of a path start -> ... -> goal in the order graph (DFS)."""
        stack: list[tuple[str, list[tuple[str, str]]]] = [(start, [])]
        seen = {start}
        while stack:
            node, path = stack.pop()
            for (nxt,) in c.execute("SELECT b FROM order_edges WHERE a=?", (node,)).fetchall():
                step = path + [(node, nxt)]
                if nxt == goal:
                    return step
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, step))
        return None


_stores: dict[str, SQLiteStore] = {}
# Reentrant: creating a store allocates (sqlite), so a finalizer may run here
# and take a lockwise lock that needs the store; it then makes its own, and
# the first one stored wins.
_stores_lock = _thread.RLock()


def store_for(directory: Optional[str] = None) -> SQLiteStore:
    directory = os.path.abspath(directory or default_dir())
    with _stores_lock:
        store = _stores.get(directory)
        if store is None:
            store = _stores.setdefault(directory, SQLiteStore(directory))
        return store


def _after_fork_in_child() -> None:
    global _nonce
    _nonce = uuid.uuid4().hex[:8]
    for store in _stores.values():
        store._local = threading.local()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

__all__ = ["DeadlockError", "HOST", "SQLiteStore", "StoreUnavailable", "deadlock_finding",
           "local_links", "order_finding", "participant", "store_for"]
