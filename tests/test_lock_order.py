"""Potential deadlocks: lock-order inversions reported from runs that did not freeze (issue 3)."""

from __future__ import annotations

import gc
import logging
import subprocess
import sys
import textwrap
import threading
import tracemalloc
import warnings

import pytest

import lockwise
from lockwise import PotentialDeadlockError, PotentialDeadlockWarning, _order

from .conftest import Runner
from .runner_helpers import clean_env


def order_findings() -> list[lockwise.Finding]:
    return lockwise.findings("lock-order")


def run_in_thread(fn: object, name: str) -> None:
    runner = Runner()
    runner.start(fn, name)  # type: ignore[arg-type]
    runner.join()
    assert not runner.errors, runner.errors


class Account:
    def __init__(self, number: int) -> None:
        self.number = number
        self.lock = lockwise.Lock()
        self.balance = 100


def transfer(source: Account, destination: Account, amount: int) -> None:
    with source.lock, destination.lock:
        source.balance -= amount
        destination.balance += amount


def ordered_transfer(source: Account, destination: Account, amount: int) -> None:
    first, second = sorted((source, destination), key=lambda a: a.number)
    with first.lock, second.lock:
        source.balance -= amount
        destination.balance += amount


def test_opposite_order_transfers_run_one_after_the_other() -> None:
    a, b = Account(1), Account(2)
    with pytest.warns(PotentialDeadlockWarning) as caught:
        run_in_thread(lambda: transfer(a, b, 10), "Teller-1")
        run_in_thread(lambda: transfer(b, a, 10), "Teller-2")
    (finding,) = order_findings()
    assert finding.details["level"] == "instance"
    sites = {lock.site for lock in finding.locks}
    assert sites == {a.lock.site}  # both Account locks come from one line
    assert {lock.name for lock in finding.locks} == {"Account.lock#1", "Account.lock#2"}
    assert sorted(finding.threads) == ["Teller-1", "Teller-2"]
    text = str(finding)
    assert "*** DEADLOCK ***" in text and "<- waits for Teller-1" in text
    assert "in transfer" in text and "test_lock_order.py" in text
    assert "lockwise/_" not in text, text
    assert len(caught) == 1 and caught[0].filename.endswith("test_lock_order.py")


def test_reported_once_per_distinct_cycle() -> None:
    a, b = Account(1), Account(2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(10):
            transfer(a, b, 1)
            transfer(b, a, 1)
    assert len(order_findings()) == 1
    assert order_findings()[0].details["single_thread"] is True


def test_sorted_transfers_are_not_reported() -> None:
    accounts = [Account(i) for i in range(6)]
    runner = Runner()
    for t in range(4):
        def work(t: int = t) -> None:
            for i in range(200):
                ordered_transfer(accounts[(i + t) % 6], accounts[(i * 5 + t + 1) % 6], 1)
        runner.start(work, f"W{t}")
    runner.join(30)
    assert not runner.errors
    assert order_findings() == []
    assert sum(a.balance for a in accounts) == 600


def test_three_locks_each_pair_in_its_own_thread() -> None:
    lock_a = lockwise.Lock(name="A")
    lock_b = lockwise.Lock(name="B")
    lock_c = lockwise.Lock(name="C")

    def nest(first: lockwise.Lock, second: lockwise.Lock) -> None:
        with first, second:
            pass

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_in_thread(lambda: nest(lock_a, lock_b), "AB")
        run_in_thread(lambda: nest(lock_b, lock_c), "BC")
        assert order_findings() == []
        run_in_thread(lambda: nest(lock_c, lock_a), "CA")
    (finding,) = order_findings()
    assert [lock.name for lock in finding.locks] == ["C", "A", "B"]
    assert finding.details["level"] == "class"
    assert set(finding.threads) == {"AB", "BC", "CA"}
    assert len(finding.details["cycle"]) == 3


class Observable:
    def __init__(self) -> None:
        self._lock = lockwise.RLock()
        self.listeners: list[Listener] = []
        self.value = 0

    def set(self, value: int) -> None:
        with self._lock:
            self.value = value
            for listener in self.listeners:
                listener.notify(self)

    def get(self) -> int:
        with self._lock:
            return self.value


class Listener:
    def __init__(self) -> None:
        self._lock = lockwise.Lock()
        self.seen: list[int] = []

    def notify(self, source: Observable) -> None:
        with self._lock:
            self.seen.append(source.value)

    def refresh(self, source: Observable) -> None:
        with self._lock:
            self.seen.append(source.get())  # calls back into the observable under our lock


def test_observer_calling_back_under_its_own_lock() -> None:
    observable, listener = Observable(), Listener()
    observable.listeners.append(listener)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_in_thread(lambda: observable.set(1), "Notifier")
        run_in_thread(lambda: listener.refresh(observable), "Refresher")
    (finding,) = order_findings()
    assert {lock.name for lock in finding.locks} == {"Observable._lock", "Listener._lock"}
    assert finding.details["level"] == "class"


def test_logging_handler_taking_application_lock() -> None:
    with lockwise.installed():
        app_lock = threading.RLock()  # reentrant: emit() may run while this thread holds it

        class AuditHandler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                with app_lock:  # the handler's own lock is held here
                    pass

        handler = AuditHandler()  # its lock is created inside logging: a lockwise RLock
    assert type(handler.lock).__module__.split(".")[0] == "lockwise"
    logger = logging.getLogger("lockwise-test-audit")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")

            def log_under_app_lock() -> None:
                with app_lock:
                    logger.warning("holding the app lock")

            run_in_thread(lambda: logger.warning("plain"), "Logger")
            run_in_thread(log_under_app_lock, "AppThread")
    finally:
        logger.removeHandler(handler)
    (finding,) = order_findings()
    sites = {lock.site.rsplit(":", 1)[0] for lock in finding.locks}
    assert any(site.endswith("logging/__init__.py") for site in sites), sites


def test_five_philosophers_eating_one_at_a_time() -> None:
    forks = [lockwise.Lock() for _ in range(5)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(5):
            def eat(i: int = i) -> None:
                with forks[i], forks[(i + 1) % 5]:
                    pass
            run_in_thread(eat, f"Philosopher-{i}")
    (finding,) = order_findings()
    assert len(finding.details["cycle"]) == 5
    assert len({lock.name for lock in finding.locks}) == 5
    assert not finding.details["single_thread"]


def test_rlock_taken_recursively_then_another_lock_and_reverse() -> None:
    rlock = lockwise.RLock()
    other = lockwise.Lock()

    def recursive_then_other() -> None:
        with rlock, rlock, other:
            pass

    def other_then_rlock() -> None:
        with other, rlock:
            pass

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_in_thread(recursive_then_other, "Recursive")
        run_in_thread(other_then_rlock, "Reverse")
    (finding,) = order_findings()
    assert len(finding.details["cycle"]) == 2


# ------------------------------------------------------------------ not reported


def test_consistent_order_from_many_threads() -> None:
    locks = [lockwise.Lock() for _ in range(4)]
    runner = Runner()
    for t in range(6):
        def work() -> None:
            for _ in range(300):
                with locks[0], locks[1], locks[2], locks[3]:
                    pass
        runner.start(work, f"W{t}")
    runner.join(30)
    assert order_findings() == []


def test_gate_lock_protected_inversions() -> None:
    gate = lockwise.Lock(name="gate")
    a, b = lockwise.Lock(name="a"), lockwise.Lock(name="b")

    def ab() -> None:
        with gate, a, b:
            pass

    def ba() -> None:
        with gate, b, a:
            pass

    run_in_thread(ab, "AB")
    run_in_thread(ba, "BA")
    assert order_findings() == []
    # ... but once the inversion happens outside the gate, it is reported
    with pytest.warns(PotentialDeadlockWarning):
        run_in_thread(lambda: [a.acquire(), b.acquire(), b.release(), a.release()], "Ungated")
    assert len(order_findings()) == 1


def test_try_lock_with_back_off_in_opposite_orders() -> None:
    a, b = lockwise.Lock(name="a"), lockwise.Lock(name="b")

    def take(first: lockwise.Lock, second: lockwise.Lock) -> None:
        for _ in range(100):
            with first:
                if second.acquire(blocking=False):
                    second.release()
                    return

    runner = Runner()
    runner.start(lambda: take(a, b), "AB")
    runner.start(lambda: take(b, a), "BA")
    runner.join()
    assert order_findings() == []


def test_timed_acquires_add_no_edge() -> None:
    a, b = lockwise.Lock(name="a"), lockwise.Lock(name="b")
    with a:
        assert b.acquire(timeout=1)
        b.release()
    with b, a:
        pass
    assert order_findings() == []


def test_hand_over_hand_traversal_in_one_direction() -> None:
    nodes = [lockwise.Lock() for _ in range(8)]

    def walk() -> None:
        nodes[0].acquire()
        for i in range(1, len(nodes)):
            nodes[i].acquire()
            nodes[i - 1].release()
        nodes[-1].release()

    runner = Runner()
    for t in range(3):
        runner.start(walk, f"Walker-{t}")
    runner.join()
    assert not runner.errors
    assert order_findings() == []


def test_lock_used_as_signal_is_not_ordered() -> None:
    done = lockwise.Lock(name="done")
    data = lockwise.Lock(name="data")
    done.acquire()
    run_in_thread(done.release, "Signaller")  # released by another thread: a signal
    with data, done:
        pass
    with done, data:
        pass
    assert order_findings() == []


def test_condition_lock_is_not_held_during_wait() -> None:
    cond = lockwise.Condition(lockwise.Lock(name="cond"))
    other = lockwise.Lock(name="other")
    ready = threading.Event()

    def waiter() -> None:
        with cond:
            ready.set()
            cond.wait(5)

    runner = Runner()
    runner.start(waiter, "Waiter")
    ready.wait(5)
    with other, cond:  # the waiter does not hold cond's lock while it waits
        cond.notify()
    runner.join()
    assert order_findings() == []


def test_million_short_lived_locks_under_one_long_lived() -> None:
    outer = lockwise.Lock(name="outer")
    tracemalloc.start()
    try:
        with outer:
            for _ in range(50_000):
                with lockwise.Lock():
                    pass
        gc.collect()
        baseline, _peak = tracemalloc.get_traced_memory()
        with outer:
            for _ in range(1_000_000):
                with lockwise.Lock():
                    pass
        gc.collect()
        after, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - baseline < 64 * 1024, after - baseline
    assert len(_order._classes) <= 4
    assert order_findings() == []


def test_many_short_lived_same_site_pairs_leave_no_instance_nodes() -> None:
    for _ in range(2000):
        x, y = lockwise.Lock(), lockwise.Lock()
        with x, y:
            pass
    del x, y
    gc.collect()
    with lockwise.Lock(), lockwise.Lock(name="drain"):  # a slow-path visit drains the dead
        pass
    assert sum(len(g) for g in _order._instances.values()) <= 4
    assert len(_order._known_instances) <= 4 and len(_order._instance_keys) <= 8


def test_repeated_same_site_nesting_takes_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = Account(1), Account(2)
    slow_calls = []
    real_slow = _order._slow

    def counting_slow(*args: object) -> object:
        slow_calls.append(args)
        return real_slow(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(_order, "_slow", counting_slow)
    for _ in range(50):
        transfer(a, b, 1)
    assert len(slow_calls) == 1  # the first time records the edge; later ones are known
    assert order_findings() == []
    with pytest.warns(PotentialDeadlockWarning):
        run_in_thread(lambda: transfer(b, a, 1), "Teller-2")  # the other order is new
    (finding,) = order_findings()
    assert finding.details["level"] == "instance"
    assert len(slow_calls) == 2


# ------------------------------------------------------------------ control


def test_declare_order_silences_a_reviewed_cycle() -> None:
    a, b = lockwise.Lock(name="init"), lockwise.Lock(name="runtime")
    lockwise.declare_order(a, b)
    with a, b:
        pass
    with b, a:
        pass
    assert order_findings() == []
    with pytest.raises(ValueError, match="at least two locks"):
        lockwise.declare_order(a)
    with pytest.raises(TypeError, match="lockwise locks"):
        lockwise.declare_order(a, threading.Lock())  # type: ignore[arg-type]


def test_policy_raise_undoes_the_acquire() -> None:
    lockwise.configure(on_lock_order="raise")
    a, b = lockwise.Lock(name="a"), lockwise.Lock(name="b")
    with a, b:
        pass
    with b:
        with pytest.raises(PotentialDeadlockError):
            a.acquire()
        assert not a.locked()
        assert lockwise.held_locks() == [b]


def test_warning_as_error_undoes_the_acquire() -> None:
    a, b = lockwise.Lock(name="a"), lockwise.Lock(name="b")
    with a, b:
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("error", PotentialDeadlockWarning)
        with b:
            with pytest.raises(PotentialDeadlockWarning):
                a.acquire()
            assert not a.locked()


def test_policy_callable_and_log(caplog: pytest.LogCaptureFixture) -> None:
    got: list[lockwise.Finding] = []
    lockwise.configure(on_lock_order=got.append)
    a, b = lockwise.Lock(name="a"), lockwise.Lock(name="b")
    with caplog.at_level(logging.WARNING, logger="lockwise"):
        with a, b:
            pass
        with b, a:
            pass
        assert lockwise.flush(5)  # the callable and logging run in lockwise's reporter thread
    assert len(got) == 1 and got[0].kind == "lock-order"
    assert any("potential deadlock" in r.getMessage() for r in caplog.records)
    data = got[0].to_dict()
    assert data["kind"] == "lock-order" and {lock["name"] for lock in data["locks"]} == {"a", "b"}
    assert all(":" in lock["site"] for lock in data["locks"])


def test_findings_are_logged_once_the_program_imports_logging() -> None:
    # lockwise does not import logging itself; a program that imports and
    # configures it after lockwise still gets the findings as log records.
    code = textwrap.dedent("""
        import sys, lockwise
        def invert(first, second):
            with first, second:
                pass
            with second, first:
                pass
        assert "logging" not in sys.modules
        lockwise.configure(on_lock_order="log")
        invert(lockwise.Lock(name="a"), lockwise.Lock(name="b"))
        assert lockwise.flush(5)  # delivered (to no handler) before logging exists
        import logging
        logging.basicConfig(format="%(name)s %(levelname)s %(message)s")
        invert(lockwise.Lock(name="c"), lockwise.Lock(name="d"))
        print(len(lockwise.findings()))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, env=clean_env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "2"
    logged = [line for line in result.stderr.splitlines() if line.startswith("lockwise ")]
    assert len(logged) == 1, result.stderr
    assert logged[0].startswith("lockwise WARNING lockwise: potential deadlock")
    assert "d -> c -> d" in logged[0]  # the finding made after logging was imported


def test_reset_forgets_graph_and_findings() -> None:
    a, b = lockwise.Lock(name="a"), lockwise.Lock(name="b")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with a, b:
            pass
        with b, a:
            pass
    assert order_findings()
    lockwise.reset()
    assert lockwise.findings() == []
    with b, a:
        pass
    assert order_findings() == []
