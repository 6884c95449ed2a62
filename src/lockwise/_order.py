"""Potential deadlocks: recording lock order and reporting inversions.

``note(ts, lock)`` runs for a blocking, untimed acquisition made while the
thread holds other locks. Its fast path builds the chain key (the sites of the
held locks plus the new lock's site) and returns when the key was validated
before: a tuple build and one set lookup (when locks of one site are nested,
the key also holds their serials: ``_known_instances``; the C accelerator runs
this fast path itself). Otherwise the slow path records the
edges held-lock -> new-lock in the graphs of ``_graph`` and searches for the
cycle each new edge closes.

Which graph: locks of different creation sites are compared as classes
(their sites), like lockdep; two locks of one site are compared as instances
(in that site's own instance graph), so ``transfer(a, b)`` then
``transfer(b, a)`` is an inversion, and accounts always locked in sorted
order are not. A cycle that leaves a site and comes back to it is found at
class level.

Not recorded: try-locks (``blocking=False``) and timed acquires, which cannot
wait forever; re-acquiring a held RLock; locks of a site that was used as a
signal (released by another thread); anything while lockwise reports.

A cycle whose edges were all seen in one thread is still reported (the same
code running in two threads would deadlock) and says so.

Gates. An edge keeps the other locks held on every occasion it was taken;
a cycle whose edges all share one is serialised by it and not reported. At
class level a gate is a site (other than the edge's two); at instance level
(one site's instance graph) a gate is either another site or, for a lock of
that same site, its serial: ``g, a, b = Lock(), Lock(), Lock()`` with both
orders of a and b taken under g is not an inversion.

Re-entry. A finalizer (``__del__``, a weakref callback) or a signal handler
may run in the middle of an update, in the updating thread, and take locks
or record findings (whose JSON report reads :func:`graph_data`). So the
graphs' lock is reentrant, and every holder first raises its thread's
``ThreadState.quiet``: nested acquisitions record no edges (the nested
bookkeeping is skipped, never the locking itself), a nested ``graph_data``
reads the graphs as they are between two statements of the outer update,
and a nested ``declare_order`` or ``reset`` (which would change the graphs
under the outer update) is handed to the reporter thread, which runs it once
the lock is free.
"""

from __future__ import annotations

import _thread
import sys
import weakref
from operator import attrgetter
from types import FrameType

from . import _findings, _sites
from ._config import settings
from ._describe import kind_of
from ._errors import PotentialDeadlockError
from ._findings import Finding, FrameInfo, LockRef, StackInfo
from ._graph import Edge, OrderGraph
from ._sites import Site, frame_info, serial_for, state_name, user_frame, user_stack
from ._state import ThreadState, current_state

TYPE_CHECKING = False  # True for type checkers: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Any, Optional

_site_of = attrgetter("_site")
_serial_of = attrgetter("_serial")
_NO_GATES: frozenset[Any] = frozenset()
# Raw reentrant lock: held only while updating or reading the graphs, never
# while waiting on user locks or calling user code; reentrant for finalizers
# and signal handlers (see "Re-entry" above). ``_slow`` takes it with a
# timeout: another thread's hold can only make it skip an edge, never hang.
_lock = _thread.RLock()

#: Chain keys (held sites, new site) whose edges are recorded and checked.
_known: set[tuple[tuple[Site, ...], Site]] = set()
#: The same for chains that nest locks of one site, which the chain key cannot
#: tell apart: (chain key, serials of the held locks, serial of the new one).
#: Serials are never reused; a key goes when one of its locks dies.
_known_instances: set[tuple[Any, ...]] = set()
_instance_keys: dict[tuple[Site, int], list[tuple[Any, ...]]] = {}
_classes: OrderGraph[Site] = OrderGraph()
_instances: dict[Site, OrderGraph[int]] = {}
_types: dict[Site, str] = {}
_serial_refs: dict[tuple[Site, int], Any] = {}
_dead: list[tuple[Site, int]] = []


class _EdgeInfo:
    """First occurrence of an edge: who took it, and the two stacks."""

    __slots__ = ("thread", "first", "second", "first_stack", "second_stack")

    def __init__(self, thread: str, first: LockRef, second: LockRef,
                 first_stack: list[FrameInfo], second_stack: list[FrameInfo]) -> None:
        self.thread = thread
        self.first = first
        self.second = second
        self.first_stack = first_stack
        self.second_stack = second_stack


def actor_name(ts: Any) -> str:
    """The name of the thread, or task (``display_name``), that took an edge."""
    display = getattr(ts, "display_name", None)
    return str(display()) if display is not None else state_name(ts)


def note(ts: ThreadState, lock: Any) -> Optional[BaseException]:
    """Record that ``ts`` acquires ``lock`` while holding ``ts.held``.

    Returns an exception for the caller to raise (the lock-order policy
    ``raise``, or a warning turned into an error) after undoing its acquire.
    """
    if ts.quiet:
        return None
    site = lock._site
    chain = tuple(map(_site_of, ts.held))
    key = (chain, site)
    if site not in chain:
        if key in _known:
            return None
    elif lock._serial and (key, tuple(map(_serial_of, ts.held)), lock._serial) in _known_instances:
        return None
    if site.signal:
        return None
    return _slow(ts, lock, chain, key, sys._getframe(2))


def _serial(lock: Any) -> int:
    serial = serial_for(lock)
    site: Site = lock._site
    if (site, serial) not in _serial_refs:
        key = (site, serial)

        def forget(_ref: Any) -> None:
            _dead.append(key)

        _serial_refs[key] = weakref.ref(lock, forget)
    return serial


def _know_instances(key: tuple[tuple[Site, ...], Site], held: list[Any], lock: Any) -> None:
    """Validate the chain of ``held`` + ``lock`` (nesting locks of one site)."""
    ikey = (key, tuple(map(_serial_of, held)), lock._serial)
    if ikey in _known_instances:
        return
    _known_instances.add(ikey)
    for h in (*held, lock):
        if h._serial:
            _instance_keys.setdefault((h._site, h._serial), []).append(ikey)


def _drain_dead() -> None:
    while _dead:
        site, serial = _dead.pop()
        _serial_refs.pop((site, serial), None)
        for ikey in _instance_keys.pop((site, serial), ()):
            _known_instances.discard(ikey)
        graph = _instances.get(site)
        if graph is not None:
            graph.remove_node(serial)
            if not len(graph):
                del _instances[site]


def _stack_to(frame: Optional[FrameType], lock: Any) -> list[FrameInfo]:
    """The stack where ``lock`` was acquired, rebuilt from the current one.

    Only the acquiring line is stored per acquisition (cheap); if that frame is
    still on the current stack, the frames above it are the rest of the story.
    """
    acq = getattr(lock, "_acq", None)
    if acq is None:
        return []
    code, lineno = acq
    f = frame
    while f is not None:
        if f.f_code is code:
            return user_stack(f.f_back) + [frame_info(code, lineno)]
        f = f.f_back
    return [frame_info(code, lineno)]


def _ref(site: Site, serial: int = 0) -> LockRef:
    name = f"{site.label}#{serial}" if serial else site.label
    return LockRef(name, str(site), _types.get(site, "Lock"))


def _slow(ts: ThreadState, lock: Any, chain: tuple[Site, ...],
          key: tuple[tuple[Site, ...], Site],
          frame: Optional[FrameType]) -> Optional[BaseException]:
    ts.quiet += 1  # first: a re-entrant acquire from here on records nothing
    if not _lock.acquire(True, 1.0):
        ts.quiet -= 1
        return None
    found: list[Finding] = []
    try:
        _drain_dead()
        _drop_orphans(ts)
        chain = tuple(map(_site_of, ts.held))
        key = (chain, lock._site)
        site = lock._site
        if site not in _types:
            _types[site] = kind_of(lock)
        held = [h for h in ts.held if h is not lock and not h._site.signal]
        exempt = _declared_exception(held, lock)
        if exempt is not None:
            held.remove(exempt)
        # Two locks of one site reach here on every nested acquisition (the
        # chain cache cannot tell instances apart): a known edge costs no
        # names, no stacks and no new objects.
        for h in held:
            hsite = h._site
            if len(held) == 1:
                gates = _NO_GATES
            elif hsite is site:
                # Instance level: a held lock of this same site is a gate too,
                # by its serial (the instance graph's nodes are serials).
                gates = frozenset(o._site if o._site is not site else _serial(o)
                                  for o in held if o is not h)
            else:
                gates = frozenset(o._site for o in held if o is not h and o._site is not hsite
                                  and o._site is not site)
            if hsite is site:
                graph: Optional[OrderGraph[Any]] = _instances.get(site)
                if graph is None:
                    graph = _instances[site] = OrderGraph()
                a: Any = _serial(h)
                b: Any = _serial(lock)
            else:
                graph = _classes
                a, b = hsite, site
                if hsite not in _types:
                    _types[hsite] = kind_of(h)
            edge = graph.edge(a, b)
            if edge is None:
                edge = Edge(gates, _edge_info(ts, h, lock, a, b, frame), ts.uid)
                graph.add(a, b, edge)
            else:
                edge.threads.add(ts.uid)
                if edge.info is None:  # declared before it was seen
                    edge.info = _edge_info(ts, h, lock, a, b, frame)
                if not edge.gates:
                    continue  # nothing left to narrow
                narrowed = edge.gates & gates
                if narrowed == edge.gates:
                    continue
                edge.gates = narrowed
            cycle = graph.find_cycle(a, b, skip=_is_signal if graph is _classes else None)
            if cycle is not None:
                found.append(_finding(graph, cycle, site if graph is not _classes else None))
        if exempt is not None:
            pass  # not cached: the same chain taken elsewhere must be recorded
        elif site not in chain:
            _known.add(key)
        else:
            _know_instances(key, ts.held, lock)
    except Exception as exc:
        _findings.internal_error("the lock-order check", exc)
    finally:
        _lock.release()
        ts.quiet -= 1
    return _report(ts, found)


def _declared_exception(held: list[Any], lock: Any) -> Any:
    """The held lock whose edge to ``lock`` is a declared exception, or None.

    One exception, documented in docs/stdlib-suites.md: CPython's
    ``logging.Handler.close()`` takes logging's module lock (``logging._lock``)
    while its caller holds the handler's own lock (``FileHandler.close``,
    ``StreamHandler.close``, ``MemoryHandler.close``, ``SocketHandler.close``,
    ``logging.shutdown()``), and ``dictConfig``/``fileConfig`` take that
    handler's lock under the module lock (``_clearExistingHandlers`` ->
    ``shutdown``): CPython's own known inversion, python/cpython#96727 and
    #84551, which users cannot act on. Only that edge is left out: the
    handler's lock -> the module lock, taken by ``Handler.close`` of that very
    handler. The module lock stays instrumented, and the same edge taken
    anywhere else (an ``emit()`` that calls ``logging.getLogger()`` or adds
    a handler: the bug of #96727) is recorded and reported.

    Cost: one ``sys.modules`` lookup on the slow path (a new chain of locks);
    a few frames walked when ``lock`` is logging's module lock.
    """
    logging = sys.modules.get("logging")
    if logging is None or lock is not getattr(logging, "_lock", None) or not held:
        return None
    frame: Optional[FrameType] = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename in _sites.INTERNAL_FILES:
        frame = frame.f_back
    module_file = getattr(logging, "__file__", None)
    if frame is not None and frame.f_code.co_name == "_acquireLock" \
            and frame.f_code.co_filename == module_file:  # 3.10-3.12: close() calls it
        frame = frame.f_back
    if frame is None or frame.f_code.co_name != "close" \
            or frame.f_code.co_filename != module_file:
        return None
    handler = frame.f_locals.get("self")
    own = getattr(handler, "lock", None)
    if own is None or not isinstance(handler, logging.Handler):
        return None
    for h in held:
        if h is own:
            return h
    return None


def _edge_info(ts: ThreadState, held: Any, lock: Any, a: Any, b: Any,
               frame: Optional[FrameType]) -> _EdgeInfo:
    """Who first took ``held`` then ``lock``, and where (nodes ``a`` -> ``b``)."""
    user = user_frame(frame)
    if held._site is lock._site:
        refs = (_ref(lock._site, a), _ref(lock._site, b))
    else:
        refs = (_ref(a), _ref(b))
    return _EdgeInfo(actor_name(ts), refs[0], refs[1], _stack_to(user, held), user_stack(user))


def _refcount_at(held: list[Any], i: int) -> int:
    """``sys.getrefcount`` of ``held[i]``: the one expression both the
    calibration below and ``_drop_orphans`` use, so both count alike."""
    return sys.getrefcount(held[i])


def _calibrate_orphan_refcount() -> int:
    """What ``_refcount_at`` reads for an object only a list references.

    2 on CPython 3.10-3.13 and 3.13t (the list's reference and the argument's).
    Measured, not assumed: 3.14 lets the interpreter pass borrowed references
    (``sys.getrefcount`` "may be lower than expected"), so a constant could
    take a lock still referenced elsewhere for an orphan. 0 (never drop) when
    the reading makes no sense: orphans are kept, as before this rule existed.
    """
    try:
        probe: list[Any] = [_Probe()]
        count = _refcount_at(probe, 0)
        probe.append(probe[0])  # a second reference must read one more
        if _refcount_at(probe, 0) != count + 1:
            return 0
    except Exception:
        return 0
    return count if 1 <= count <= 3 else 0


class _Probe:
    __slots__ = ()


_ORPHAN_REFCOUNT = _calibrate_orphan_refcount()


def _drop_orphans(ts: ThreadState) -> None:
    """Forget held locks that nothing but the held list references.

    A lock acquired and then dropped without release can never be released or
    waited for again; keeping it would add edges from a lock nobody can take.
    The count that means "only the list" is measured at import
    (``_calibrate_orphan_refcount``); if it cannot be, nothing is dropped.
    """
    orphan = _ORPHAN_REFCOUNT
    if not orphan:
        return
    held = ts.held
    i = 0
    while i < len(held):
        if _refcount_at(held, i) <= orphan:
            del held[i]
        else:
            i += 1


def _is_signal(node: Any) -> bool:
    return isinstance(node, Site) and node.signal


def _report(ts: ThreadState, found: list[Finding]) -> Optional[BaseException]:
    error: Optional[BaseException] = None
    ts.quiet += 1
    try:
        for finding in found:
            if not _findings.record(finding):
                continue
            try:
                if _findings.apply_policy(finding, settings.on_lock_order) and error is None:
                    error = PotentialDeadlockError(str(finding), finding)
            except Exception as exc:  # e.g. -W error::lockwise.PotentialDeadlockWarning
                error = error or exc
    finally:
        ts.quiet -= 1
    return error


def _finding(graph: OrderGraph[Any], cycle: list[Any], site: Optional[Site]) -> Finding:
    from ._report import render_lock_order

    edges: list[dict[str, Any]] = []
    stacks = []
    threads: list[str] = []
    idents: set[int] = set()
    for i, a in enumerate(cycle):
        b = cycle[(i + 1) % len(cycle)]
        edge = graph.edge(a, b)
        assert edge is not None
        info: _EdgeInfo = edge.info
        idents |= edge.threads
        edges.append({
            "from": info.first.to_dict(), "to": info.second.to_dict(), "thread": info.thread,
            "first_stack": [f.to_dict() for f in info.first_stack],
            "second_stack": [f.to_dict() for f in info.second_stack],
        })
        if info.thread not in threads:
            threads.append(info.thread)
        stacks.append(StackInfo(info.thread, f"acquired {info.first.name}", info.first_stack))
        stacks.append(StackInfo(info.thread, f"then acquired {info.second.name} while holding "
                                f"{info.first.name}", info.second_stack))
    locks = [LockRef.from_dict(e["from"]) for e in edges]
    single = len(idents) == 1
    labels = [lock.name for lock in locks]
    if len(set(labels)) < len({lock.site for lock in locks}):
        labels = [f"{lock.name} ({lock.site.rsplit('/', 1)[-1]})" for lock in locks]
    names = " -> ".join(labels + labels[:1])
    finding = Finding(
        kind="lock-order",
        summary=f"lock-order inversion: {names}" + (" (seen in one thread)" if single else ""),
        threads=threads, locks=locks, stacks=stacks,
        details={"cycle": edges, "single_thread": single,
                 "level": "instance" if site is not None else "class"},
        key=("lock-order", frozenset((repr(e["from"]), repr(e["to"])) for e in edges)),
    )
    finding.text = render_lock_order(finding)
    return finding


def declare_order(*locks: Any) -> None:
    """Declare that ``locks`` are meant to be taken in this order.

    Each consecutive pair (a, b) marks the edge a -> b as reviewed: cycles
    through it are not reported. Use it to silence a false alarm you checked.
    Locks of different sites declare the order of their classes.
    """
    if len(locks) < 2:
        raise ValueError("declare_order needs at least two locks, in their intended order")
    for lock in locks:
        if not hasattr(lock, "_site"):
            raise TypeError(f"declare_order takes lockwise locks, not {type(lock).__name__}")
    if _lock._is_owned():  # type: ignore[attr-defined]  # re-entered (finalizer, signal)
        _findings.defer(declare_order, *locks)
        return
    ts = current_state()
    ts.quiet += 1
    try:
        _declare(locks)
    finally:
        ts.quiet -= 1


def _declare(locks: tuple[Any, ...]) -> None:
    with _lock:
        for first, second in zip(locks, locks[1:]):
            if first._site is second._site:
                graph: OrderGraph[Any] = _instances.setdefault(first._site, OrderGraph())
                a: Any = _serial(first)
                b: Any = _serial(second)
            else:
                graph, a, b = _classes, first._site, second._site
            edge = graph.edge(a, b)
            if edge is None:
                edge = Edge(frozenset(), None, 0)
                edge.threads.clear()
                graph.add(a, b, edge)
            edge.declared = True


def reset() -> None:
    """Forget the order graph (the recorded edges and validated chains)."""
    if _lock._is_owned():  # type: ignore[attr-defined]  # re-entered (finalizer, signal)
        _findings.defer(reset)
        return
    with _lock:
        _known.clear()
        _known_instances.clear()
        _instance_keys.clear()
        _classes.out.clear()
        _classes.into.clear()
        _instances.clear()
        _serial_refs.clear()
        _dead.clear()


def graph_data() -> dict[str, Any]:
    """The class-level order graph as JSON-ready nodes and edges (for reports)."""
    ts = current_state()
    ts.quiet += 1  # a finalizer run from here records no edge under our feet
    try:
        return _graph_data()
    finally:
        ts.quiet -= 1


def _graph_data() -> dict[str, Any]:
    # Timed: the holder may be blocked in a finalizer (on a lock this thread
    # holds). Without the lock the graphs are read through copies made by
    # single C calls (list(dict.items())): a report may miss an edge being
    # added, never fail or wait for good.
    locked = _lock.acquire(True, _findings.INTERNAL_WAIT)
    try:
        nodes = [_ref(site).to_dict() for site in list(_classes.out)]
        edges = [{"from": str(a), "to": str(b), "from_name": a.label, "to_name": b.label,
                  "threads": len(e.threads)}
                 for a, targets in list(_classes.out.items()) for b, e in list(targets.items())]
        for site, graph in list(_instances.items()):
            for a, targets in list(graph.out.items()):
                for b, e in list(targets.items()):
                    for serial in (a, b):
                        ref = _ref(site, serial).to_dict()
                        if ref not in nodes:
                            nodes.append(ref)
                    edges.append({"from": f"{site}#{a}", "to": f"{site}#{b}",
                                  "from_name": f"{site.label}#{a}",
                                  "to_name": f"{site.label}#{b}", "threads": len(e.threads)})
    finally:
        if locked:
            _lock.release()
    return {"nodes": nodes, "edges": edges}
