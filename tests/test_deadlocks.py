"""Actual deadlocks are raised as DeadlockError the moment they form (issue 2)."""

from __future__ import annotations

import gc
import operator
import os
import signal
import sys
import threading
import time

import pytest

import lockwise
from lockwise import DeadlockError

from .conftest import Runner

LATENCY = 0.1  # seconds from the cycle closing to DeadlockError


def test_self_reacquire_raises_naming_lock_and_sites() -> None:
    lock = lockwise.Lock()
    lock.acquire()
    start = time.monotonic()
    with pytest.raises(DeadlockError) as info:
        lock.acquire()
    assert time.monotonic() - start < LATENCY
    text = str(info.value)
    assert "waits for itself" in text
    created = test_self_reacquire_raises_naming_lock_and_sites.__code__.co_firstlineno + 1
    assert f"test_deadlocks.py:{created}" in text
    assert "taken at" in text and "test_deadlocks.py" in text
    # the failed attempt leaves the lock held once, by this thread, and nothing waiting
    assert lock.locked() and lock.owner is threading.current_thread()
    assert lockwise.held_locks() == [lock]
    assert lock.waiters == []
    lock.release()
    assert not lock.locked()
    finding = info.value.finding
    assert finding is not None and finding.kind == "deadlock"
    assert lockwise.findings("deadlock") == [finding]
    assert finding.locks[0].site.endswith(f":{lock._site.lineno}")


def test_reports_never_call_sysconfig(monkeypatch: pytest.MonkeyPatch) -> None:
    # sysconfig.get_paths() expands its whole scheme on each call (~0.5 ms; the
    # DeadlockError message once called it 17 times), and it takes sysconfig's
    # lock: the first report runs in lockwise's reporter thread, and a fork by
    # the program while that thread held sysconfig's lock was a fork hazard
    # lockwise made (CPython's import-lock suites under lockwise, 1 CI in 3).
    import sysconfig

    from lockwise import _findings, _report

    calls = []

    def counting(*args: object, **kwargs: object) -> None:
        calls.append(1)
        raise AssertionError("sysconfig called by a report")

    monkeypatch.setattr(sysconfig, "get_paths", counting)
    monkeypatch.setattr(sysconfig, "get_config_vars", counting)
    monkeypatch.setattr(sysconfig, "get_config_var", counting)
    monkeypatch.setattr(_report, "_library_dirs", [])  # as in a fresh process
    texts = []
    for _ in range(5):
        lock = lockwise.Lock()
        lock.acquire()
        with pytest.raises(DeadlockError) as info:
            lock.acquire()
        lock.release()
        texts.append(str(info.value))
    assert _findings.flush(10.0)  # the reporter thread has written its reports too
    assert calls == []
    # the report still drops the standard library's and the working directory's prefix
    assert all("taken at" in text and "test_deadlocks.py" in text for text in texts)
    assert _report.short_path(threading.__file__) == "threading.py"


def test_the_brief_report_tells_the_program_from_the_stdlib_and_installed_packages() -> None:
    import sysconfig

    from lockwise import _report

    purelib = sysconfig.get_paths()["purelib"]
    assert _report._is_user({"file": os.path.abspath(__file__)})
    assert not _report._is_user({"file": threading.__file__})
    assert not _report._is_user({"file": "<frozen importlib._bootstrap>"})
    assert not _report._is_user({"file": os.path.join(purelib, "pkg", "mod.py")})


class Account:
    def __init__(self) -> None:
        self.lock = lockwise.Lock()
        self.balance = 0

    def deposit(self, amount: int) -> None:
        with self.lock:
            self.balance += amount

    def deposit_twice(self, amount: int) -> None:
        with self.lock:
            self.deposit(amount)  # re-enters the non-reentrant lock


def test_method_calling_method_that_takes_same_lock() -> None:
    account = Account()
    with pytest.raises(DeadlockError) as info:
        account.deposit_twice(5)
    assert "Account.lock" in str(info.value)
    assert not account.lock.locked()  # the with-block unwound


def _barrier_pair(runner: Runner, first: list[lockwise.Lock], second: list[lockwise.Lock],
                  names: list[str]) -> tuple[threading.Barrier, list[float]]:
    barrier = threading.Barrier(len(names))
    raised_at: list[float] = []

    def worker(a: lockwise.Lock, b: lockwise.Lock) -> str:
        with a:
            barrier.wait(5)
            try:
                with b:
                    return "done"
            except DeadlockError:
                raised_at.append(time.monotonic())
                raise

    for a, b, name in zip(first, second, names):
        runner.start(lambda a=a, b=b: worker(a, b), name)
    return barrier, raised_at


def test_two_threads_opposite_order(runner: Runner) -> None:
    a, b = lockwise.Lock(), lockwise.Lock()
    _barrier_pair(runner, [a, b], [b, a], ["T1", "T2"])
    runner.join()
    assert len(runner.errors) == 1, runner.errors
    (victim, error), = runner.errors.items()
    assert isinstance(error, DeadlockError)
    other = "T2" if victim == "T1" else "T1"
    assert runner.results[other] == "done"
    text = str(error)
    assert "T1" in text and "T2" in text and "wait for each other" in text
    assert not a.locked() and not b.locked()


def test_detection_latency_under_100ms(runner: Runner) -> None:
    a, b = lockwise.Lock(), lockwise.Lock()
    blocked = threading.Event()
    raised: list[float] = []

    def first() -> None:
        with a:
            ready.wait(5)
            blocked.set()
            with b:
                pass

    def second() -> None:
        with b:
            ready.set()
            blocked.wait(5)
            time.sleep(0.02)  # let T1 block on b first; then this wait closes the cycle
            start = time.monotonic()
            try:
                with a:
                    pass
            except DeadlockError:
                raised.append(time.monotonic() - start)
                raise

    ready = threading.Event()
    runner.start(first, "T1")
    runner.start(second, "T2")
    runner.join()
    assert raised and raised[0] < LATENCY, (raised, runner.errors)


def test_three_threads_in_a_ring(runner: Runner) -> None:
    locks = [lockwise.Lock() for _ in range(3)]
    _barrier_pair(runner, locks, locks[1:] + locks[:1], ["R0", "R1", "R2"])
    runner.join()
    assert len(runner.errors) == 1
    error = next(iter(runner.errors.values()))
    assert isinstance(error, DeadlockError)
    assert len(runner.results) == 2
    assert all(name in str(error) for name in ("R0", "R1", "R2"))


def test_five_dining_philosophers(runner: Runner) -> None:
    forks = [lockwise.Lock() for _ in range(5)]
    names = [f"P{i}" for i in range(5)]
    _barrier_pair(runner, forks, forks[1:] + forks[:1], names)
    runner.join()
    assert len(runner.errors) == 1
    assert isinstance(next(iter(runner.errors.values())), DeadlockError)
    assert len(runner.results) == 4  # everybody else ate


def test_del_taking_lock_its_thread_holds() -> None:
    lock = lockwise.Lock()
    errors: list[BaseException] = []

    class Resource:
        def __del__(self) -> None:
            try:
                with lock:
                    pass
            except DeadlockError as exc:
                errors.append(exc)

    with lock:
        resource = Resource()
        del resource  # __del__ runs here, while this thread holds the lock
        gc.collect()
    assert errors and isinstance(errors[0], DeadlockError)
    assert not lock.locked()


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs SIGUSR1")
def test_signal_handler_taking_lock_main_thread_holds() -> None:
    lock = lockwise.Lock()
    seen: list[BaseException] = []

    def handler(signum: int, frame: object) -> None:
        try:
            with lock:
                pass
        except DeadlockError as exc:
            seen.append(exc)

    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        with lock:
            signal.raise_signal(signal.SIGUSR1)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert seen and "waits for itself" in str(seen[0])
    assert not lock.locked()


def test_waiting_on_lock_of_exited_thread(runner: Runner) -> None:
    lock = lockwise.Lock()
    worker = threading.Thread(target=lock.acquire, name="Leaver")
    worker.start()
    worker.join(5)
    assert not worker.is_alive() and lock.locked()
    with pytest.raises(DeadlockError) as info:
        lock.acquire()
    assert "Leaver" in str(info.value) and "exited" in str(info.value)


def test_join_under_lock_the_joined_thread_needs(runner: Runner) -> None:
    lock = lockwise.Lock()
    started = threading.Event()
    outcome: list[str] = []

    def needs_lock() -> None:
        started.set()
        try:
            with lock:
                outcome.append("got it")
        except DeadlockError:
            outcome.append("raised")

    with lock:
        worker = threading.Thread(target=needs_lock, name="Needy")
        worker.start()
        started.wait(5)
        try:
            worker.join()  # untimed: a wait for Needy, which waits for us
        except DeadlockError:
            outcome.append("join raised")
    worker.join(5)
    assert not worker.is_alive()
    assert len(outcome) >= 1 and ("raised" in outcome or "join raised" in outcome)


def test_condition_waiter_holding_lock_its_notifier_needs(runner: Runner) -> None:
    shared = lockwise.Lock()
    cond = lockwise.Condition()
    waiting = threading.Event()

    def waiter() -> None:
        with shared, cond:
            waiting.set()
            cond.wait()  # the notifier needs `shared`, which we hold

    def notifier() -> None:
        waiting.wait(5)
        with shared, cond:
            cond.notify()

    runner.start(waiter, "Waiter")
    runner.start(notifier, "Notifier")
    runner.join(untimed=True)
    assert isinstance(runner.errors.get("Waiter"), DeadlockError), runner.errors
    assert "Notifier" not in runner.errors


def test_producer_holding_lock_while_putting_into_full_queue(runner: Runner) -> None:
    import queue

    with lockwise.installed():
        q: queue.Queue[int] = queue.Queue(maxsize=1)
        lock = threading.Lock()
    q.put(0)
    producing = threading.Event()

    def producer() -> None:
        with lock:
            producing.set()
            q.put(1)  # full: waits for the consumer, who needs `lock`

    def consumer() -> None:
        producing.wait(5)
        with lock:
            q.get()

    runner.start(producer, "Producer")
    runner.start(consumer, "Consumer")
    runner.join(untimed=True)
    assert isinstance(runner.errors.get("Producer"), DeadlockError), runner.errors


POOL_SCRIPT = """
import lockwise
lockwise.install()
from concurrent.futures import ThreadPoolExecutor
pool = ThreadPoolExecutor(max_workers=1)
def inner():
    return 1
def outer():
    return pool.submit(inner).result() + 1   # queued behind us: never runs
future = pool.submit(outer)
try:
    future.result()   # untimed: the main thread is blocked too
except lockwise.DeadlockError as exc:
    print("DeadlockError:", exc.finding.summary)
pool.shutdown(wait=True)
print("finished")
"""


def test_single_worker_pool_task_waiting_for_task_behind_it() -> None:
    # Pool workers are not daemons: run in a child so a miss cannot hang the suite.
    import subprocess

    done = subprocess.run([sys.executable, "-c", POOL_SCRIPT], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "DeadlockError: every thread is blocked" in done.stdout
    assert "finished" in done.stdout


# ------------------------------------------------------------- no findings


def test_consistent_order_under_load(runner: Runner) -> None:
    a, b = lockwise.Lock(), lockwise.RLock()
    counter = [0]

    def work() -> None:
        for _ in range(2000):
            with a, b:
                counter[0] += 1

    for i in range(4):
        runner.start(work, f"W{i}")
    runner.join(30)
    assert counter[0] == 8000 and not runner.errors
    assert lockwise.findings() == []


def test_lock_used_as_signal(runner: Runner) -> None:
    signal_lock = lockwise.Lock()
    signal_lock.acquire()  # this thread "owns" it until the other thread releases
    proceed = threading.Event()

    def releaser() -> None:
        proceed.wait(5)
        time.sleep(0.05)
        signal_lock.release()

    runner.start(releaser, "Releaser")
    proceed.set()
    assert signal_lock.acquire(timeout=5)  # waits on a lock it holds: hand-off
    signal_lock.release()
    signal_lock.acquire()
    runner2 = Runner()
    runner2.start(lambda: (time.sleep(0.05), signal_lock.release()), "Releaser2")
    signal_lock.acquire()  # untimed wait on itself, released by Releaser2
    signal_lock.release()
    runner.join()
    runner2.join()
    assert lockwise.findings() == []


def test_rlock_recursion_and_condition_wait_notify(runner: Runner) -> None:
    rlock = lockwise.RLock()
    with rlock, rlock, rlock:
        assert rlock.count == 3
    cond = lockwise.Condition()
    items: list[int] = []

    def consumer() -> int:
        with cond:
            cond.wait_for(lambda: items, timeout=5)
            return items.pop()

    runner.start(consumer, "Consumer")
    with cond:
        items.append(42)
        cond.notify()
    runner.join()
    assert runner.results["Consumer"] == 42
    assert lockwise.findings() == []


def test_timed_acquire_that_times_out_is_not_a_finding(runner: Runner) -> None:
    lock = lockwise.Lock()
    lock.acquire()
    start = time.monotonic()
    assert lock.acquire(timeout=0.05) is False
    assert time.monotonic() - start >= 0.04
    assert lock.acquire(blocking=False) is False
    lock.release()
    assert lockwise.findings() == []


def test_thread_joining_a_worker_that_finishes(runner: Runner) -> None:
    lock = lockwise.Lock()
    go = threading.Event()

    def work() -> None:
        go.wait(5)
        with lock:
            pass

    worker = threading.Thread(target=work)
    worker.start()
    go.set()
    worker.join()
    assert lockwise.findings() == []


def test_other_thread_running_means_no_stall_finding(runner: Runner) -> None:
    """A self-wait while another thread can still run is a hand-off, not a deadlock."""
    lock = lockwise.Lock()
    lock.acquire()
    stop = threading.Event()

    def busy() -> None:
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:
            time.sleep(0.01)
        lock.release()

    runner.start(busy, "Busy")
    assert lock.acquire() is True
    lock.release()
    stop.set()
    runner.join()
    assert lockwise.findings() == []


# ------------------------------------------------------------- policies


def test_policy_warn_records_and_keeps_waiting(runner: Runner) -> None:
    lockwise.configure(on_deadlock="warn")
    lock = lockwise.Lock()
    lock.acquire()
    released = threading.Event()

    def late_release() -> None:
        # Blocked threads do not count as runnable; this one sleeps in C,
        # so the main thread's self-wait is not a certain deadlock ...
        time.sleep(0.2)
        released.set()
        lock.release()

    runner.start(late_release, "Late")
    assert lock.acquire(timeout=5)
    lock.release()
    runner.join()
    assert lockwise.findings() == []


def test_policy_callable_receives_finding(runner: Runner) -> None:
    got: list[lockwise.Finding] = []
    lockwise.configure(on_deadlock=got.append)
    lock = lockwise.Lock()
    lock.acquire()

    def release_later() -> None:
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            pass  # spin (runnable) until the finding exists ... then hand off
        time.sleep(0)
        lock.release()

    # Only this thread: the self-wait is certain; the callable is told and
    # the thread keeps waiting (no raise). A helper then releases it.
    worker = threading.Thread(target=release_later, name="Helper")
    lockwise.configure(on_deadlock=lambda f: (got.append(f), worker.start()))
    assert lock.acquire()
    worker.join(5)
    lock.release()
    assert len(got) == 1 and got[0].kind == "deadlock"
    assert got[0].to_dict()["locks"][0]["site"].endswith(str(lock._site.lineno))


def test_configure_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="on_deadlock='explode'"):
        lockwise.configure(on_deadlock="explode")
    with pytest.raises(TypeError, match="unknown option 'colour'"):
        lockwise.configure(colour="red")
    with pytest.raises(ValueError, match="positive number"):
        lockwise.configure(check_interval=-1)


# ------------------------------------------------------------- robustness


def test_keyboard_interrupt_during_blocked_acquire_keeps_records(runner: Runner) -> None:
    import _thread

    lock = lockwise.Lock()
    holding = threading.Event()
    done = threading.Event()

    main_ident = threading.get_ident()

    def holder() -> None:
        with lock:
            holding.set()
            deadline = time.monotonic() + 5
            while main_ident not in lock.waiters and time.monotonic() < deadline:
                time.sleep(0.001)
            _thread.interrupt_main()
            done.wait(5)

    runner.start(holder, "Holder")
    holding.wait(5)
    with pytest.raises(KeyboardInterrupt):
        lock.acquire()
    assert lockwise.held_locks() == []
    assert lock.waiters == []
    assert lock.owner is not None and lock.owner.name == "Holder"
    done.set()
    runner.join()
    assert not lock.locked()
    assert lock.acquire(timeout=1)
    lock.release()


def test_internal_error_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str],
                                               runner: Runner) -> None:
    from lockwise import _waitfor

    # A C function that fails when lockwise calls it: the error is raised in
    # lockwise's own frame (one raised by program code, a signal handler's,
    # reaches the program instead: see test_trust_wakeups).
    monkeypatch.setattr(_waitfor, "_quiescence", operator.truediv)
    lock = lockwise.Lock()
    lock.acquire()
    runner.start(lambda: (time.sleep(0.05), lock.release()), "Releaser")
    assert lock.acquire()  # untimed, so the (broken) check runs
    lock.release()
    runner.join()
    assert lockwise.flush(5)  # stderr is written by the reporter thread
    err = capsys.readouterr().err
    assert "internal error in the deadlock check: TypeError: unsupported operand" in err


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_child_sees_locks_of_other_threads_as_dead(runner: Runner) -> None:
    held_by_other = lockwise.Lock()
    mine = lockwise.Lock()
    holding = threading.Event()
    finish = threading.Event()

    def holder() -> None:
        with held_by_other:
            holding.set()
            finish.wait(10)

    runner.start(holder, "OtherThread")
    holding.wait(5)
    with mine:
        pid = os.fork()
        if pid == 0:  # child: only this thread exists
            code = 1
            try:
                try:
                    held_by_other.acquire()
                except DeadlockError as exc:
                    if "exited" in str(exc) and lockwise.held_locks() == [mine]:
                        code = 0
            finally:
                os._exit(code)
    finish.set()
    runner.join()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0 if sys.version_info >= (3, 9) else True
