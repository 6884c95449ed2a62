"""The detector never deadlocks itself.

Finalizers (``__del__``, weakref callbacks: the garbage collector runs them
at any allocation) and signal handlers run in the middle of lockwise's own
bookkeeping, for instance while a lock-order edge is recorded under the
order graph's lock. When they take lockwise locks, and even find a deadlock
(a lock the thread already holds), every internal lock on the way (the
findings, the order graph the JSON report reads, the JSON writer) must let
the thread through or defer the work, never wait for itself.
"""

from __future__ import annotations

import gc
import signal
import sys
import sysconfig
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import lockwise
from lockwise import DeadlockError, _findings, _order
from lockwise._jsonreport import JsonWriter, load
from lockwise._report import repeat_counts


def _stacks() -> str:
    import traceback

    return "\n".join(f"--- {ident}\n" + "".join(traceback.format_stack(frame))
                     for ident, frame in sys._current_frames().items())


@pytest.fixture
def report(tmp_path: Path) -> Any:
    """A JSON writer that reads the order graph (as ``lockwise run``'s does)."""
    lockwise.configure(on_lock_order="log")
    writer = JsonWriter(str(tmp_path / "r.json"), fresh=True,
                        sections=lambda: {"order_graph": _order.graph_data()})
    _findings.add_listener(writer, internal=True)
    yield writer
    _findings.remove_listener(writer)


class _Benign:
    """Cyclic garbage whose finalizer takes lockwise locks in nested order."""

    def __init__(self, a: Any, b: Any) -> None:
        self.locks = (a, b)
        self.me = self

    def __del__(self) -> None:
        a, b = self.locks
        with a, b:
            pass


class _Partner:
    """A thread that holds ``theirs`` and waits for ``mine`` (held by the
    caller): a finalizer or signal handler of the caller that takes
    ``theirs`` closes a cycle, a deadlock raised there at once."""

    def __init__(self, mine: Any) -> None:
        self.theirs = lockwise.Lock()
        self.raised = 0  # the deadlock of one formation raises in one thread, maybe this one
        ready = threading.Event()

        def run() -> None:
            with self.theirs:
                ready.set()
                while True:
                    try:
                        with mine:
                            return
                    except DeadlockError:
                        self.raised += 1

        self.thread = threading.Thread(target=run, daemon=True, name="Partner")
        self.thread.start()
        assert ready.wait(5)
        deadline = time.monotonic() + 5
        while not mine.waiters and time.monotonic() < deadline:
            time.sleep(0.001)
        assert mine.waiters, "the partner does not wait"


class _Crossing:
    """Cyclic garbage whose finalizer, in the working thread, takes the
    partner's lock: a deadlock found (and a finding recorded, the JSON report
    written, the order graph read) from inside whatever lockwise was doing."""

    caught: list[int] = []

    def __init__(self, theirs: Any, ident: int) -> None:
        self.theirs = theirs
        self.ident = ident
        self.me = self

    def __del__(self) -> None:
        if threading.get_ident() != self.ident:
            return  # finalized by another thread: nothing to cross
        try:
            self.theirs.acquire()
        except DeadlockError:
            _Crossing.caught.append(1)
        else:
            self.theirs.release()


class _Nested:
    """Cyclic garbage whose finalizer re-takes an RLock its thread holds,
    then another lock inside it (nested order: an edge to record)."""

    def __init__(self, held: Any) -> None:
        self.held = held
        self.ident = threading.get_ident()
        self.me = self

    def __del__(self) -> None:
        if threading.get_ident() != self.ident:
            return  # another thread would wait for the holder: not the point here
        with self.held, lockwise.Lock():
            pass


def _work(theirs: Any, rheld: Any, rounds: int) -> None:
    """New lock-order edges (fresh same-line instances) and new findings
    (an inversion per round), with garbage finalized all along. ``rheld``
    is an RLock the caller holds throughout: a finalizer re-taking it
    while this thread is inside RLock.acquire of that same RLock hangs in
    pure mode (see the report: the owner is recorded after the inner
    acquire, in Python), which is the primitives' matter."""
    outer = lockwise.Lock()
    me = threading.get_ident()
    for _ in range(rounds):
        x, y = lockwise.Lock(), lockwise.Lock()
        _Benign(lockwise.Lock(), lockwise.Lock())
        with outer:
            _Crossing(theirs, me)
            _Nested(rheld)
            with x, y:
                _Benign(lockwise.Lock(), lockwise.Lock())
            with y, x:  # an inversion: a finding, a JSON write, the graph read
                pass
        with y, x:
            pass


_FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


@pytest.mark.skipif(_FREE_THREADED, reason="the free-threaded collector does not run this "
                    "test's finalizers in the working thread at small thresholds (seen on "
                    "3.13t: none ran there), so the test would check nothing")
@pytest.mark.timeout(60)
def test_finalizers_reenter_at_every_gc_threshold(report: JsonWriter) -> None:
    saved = gc.get_threshold()
    _Crossing.caught.clear()
    done: list[bool] = []
    partners: list[_Partner] = []

    def body() -> None:  # in a thread: a hang fails the join, not the run
        mine = lockwise.Lock()
        rheld = lockwise.RLock()
        with mine, rheld:
            partner = _Partner(mine)
            partners.append(partner)
            for threshold in range(1, 61):
                gc.set_threshold(threshold)
                _work(partner.theirs, rheld, 3)
        partner.thread.join(5)
        done.append(not partner.thread.is_alive())

    start = time.monotonic()
    worker = threading.Thread(target=body, daemon=True, name="Worker")
    try:
        worker.start()
        worker.join(50)
    finally:
        gc.set_threshold(*saved)
    assert done == [True], "lockwise waited for itself:\n" + _stacks()
    assert time.monotonic() - start < 50
    assert lockwise.findings("lock-order")
    # Each finalizer that crossed raised (a new formation each time), at
    # every threshold, though many ran inside lockwise's bookkeeping.
    raised = len(_Crossing.caught) + partners[0].raised  # one raise per formation
    assert _Crossing.caught and raised >= 5  # how many collections run in the worker varies
    counted = repeat_counts(lockwise.findings("deadlock"))  # merged by signature
    assert sum(n for _f, n in counted) == raised
    assert lockwise.flush(10)
    report.flush()
    assert load(report.path)


@pytest.mark.skipif(not hasattr(signal, "setitimer") or sys.platform == "win32",
                    reason="needs setitimer")
@pytest.mark.timeout(60)
def test_signal_handler_takes_locks_while_edges_are_recorded(report: JsonWriter) -> None:
    mine = lockwise.Lock()
    s1, s2 = lockwise.Lock(), lockwise.Lock()
    hits: list[str] = []
    busy: list[bool] = []

    rheld = lockwise.RLock()
    with mine, rheld:
        partner = _Partner(mine)

        def handler(signum: int, frame: Any) -> None:
            if busy:
                return  # a signal while the handler runs: not nested
            busy.append(True)
            try:
                with s1, s2:
                    pass
                try:
                    partner.theirs.acquire()  # crosses the partner: a deadlock
                except DeadlockError:
                    hits.append("deadlock")
                else:
                    partner.theirs.release()
            finally:
                busy.clear()

        # SIGPROF (CPU time): SIGALRM belongs to pytest-timeout here.
        previous = signal.signal(signal.SIGPROF, handler)
        signal.setitimer(signal.ITIMER_PROF, 0.002, 0.002)
        try:
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline and len(hits) < 30:
                _work(lockwise.Lock(), rheld, 10)
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0, 0)
            signal.signal(signal.SIGPROF, previous)
    partner.thread.join(5)
    assert not partner.thread.is_alive()
    assert hits
    assert lockwise.flush(10)
    report.flush()
    assert load(report.path)


def test_graph_data_reentered_while_an_edge_is_recorded() -> None:
    """Direct form: the order graph's lock is taken by this thread (as while
    recording an edge) and a finalizer asks for the graph data."""
    got: list[Any] = []

    class Reader:
        def __init__(self) -> None:
            self.me = self

        def __del__(self) -> None:
            got.append((threading.get_ident(), _order.graph_data()))

    # Without the GIL another thread's collection (automatic, or the
    # reporter's) may find the garbage first and run the finalizer there, where
    # it waits for the lock like any other thread and checks nothing: try again
    # until it ran in the thread that holds the lock.
    for _attempt in range(20):
        done = threading.Event()
        idents: list[int] = []

        def body(done: threading.Event = done, idents: list[int] = idents) -> None:
            idents.append(threading.get_ident())
            with _order._lock:
                Reader()
                gc.collect()
            done.set()

        t = threading.Thread(target=body, daemon=True)
        t.start()
        t.join(5)
        assert done.is_set(), f"graph_data waited for its own thread:\n{_stacks()}"
        mine = [data for ident, data in got if ident == idents[0]]
        if mine:
            assert "edges" in mine[0]
            break
    else:
        # On 3.13t gc.collect() returns at once while another thread collects,
        # and in 1 loop run in 30 under load no finalizer ran here in 20 tries
        # (got stayed empty). Make the finalizer's call itself, in the thread
        # that holds the lock: what it does is what is tested.
        held = threading.Event()
        direct: list[Any] = []

        def holder(held: threading.Event = held, direct: list[Any] = direct) -> None:
            with _order._lock:
                direct.append(_order.graph_data())
            held.set()

        t = threading.Thread(target=holder, daemon=True)
        t.start()
        t.join(5)
        assert held.is_set(), f"graph_data waited for its own thread:\n{_stacks()}"
        assert "edges" in direct[0]
