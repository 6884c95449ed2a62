"""Correct programs whose wake-up lockwise cannot see never get a DeadlockError.

Each program below finishes under plain ``python``; under ``lockwise run`` it
must finish too, with status 0 and no deadlock finding. The wake-up comes
from a signal handler, from a thread Python does not know (a native thread of
a C library), or from another thread releasing a Lock it did not acquire.
Each runs in a subprocess (signals, native threads and the "nobody left to
run" rule are per process) with a time limit, in C and in pure mode.

The last tests are the other side: the true deadlocks among the same shapes
still raise.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from .runner_helpers import clean_env

MODES = ["c", "pure"]
posix_only = pytest.mark.skipif(not hasattr(signal, "SIGTERM") or sys.platform == "win32",
                                reason="needs POSIX signals")


def _run(tmp_path: Path, source: str, mode: str, *, under_lockwise: bool,
         timeout: float = 30) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "prog.py"
    script.write_text(textwrap.dedent(source))
    env = clean_env(**({"LOCKWISE_PURE": "1"} if mode == "pure" else {}))
    report = tmp_path / "report.json"
    args = ([sys.executable, "-m", "lockwise", "run", "--json", str(report), str(script)]
            if under_lockwise else [sys.executable, str(script)])
    return subprocess.run(args, cwd=tmp_path, capture_output=True, text=True,
                          timeout=timeout, env=env)


def _findings(tmp_path: Path) -> list[dict[str, object]]:
    path = tmp_path / "report.json"
    if not path.exists():
        return []
    found: list[dict[str, object]] = json.loads(path.read_text())["findings"]
    return found


def assert_same_as_plain_python(tmp_path: Path, source: str, mode: str) -> None:
    plain = _run(tmp_path, source, mode, under_lockwise=False)
    assert plain.returncode == 0, plain.stderr
    under = _run(tmp_path, source, mode, under_lockwise=True)
    deadlocks = [f for f in _findings(tmp_path) if f["kind"] == "deadlock"]
    assert under.returncode == 0 and not deadlocks, (under.returncode, under.stderr)
    assert under.stdout == plain.stdout


# A helper process that sends the program a signal after a delay: the program's
# threads are all blocked by then, as a service's are when SIGTERM arrives.
SEND_LATER = """
import os, subprocess, sys
def send_later(signame, delay=0.4):
    subprocess.Popen(["sh", "-c", f"sleep {delay}; kill -{signame} {os.getpid()}"])
"""


@posix_only
@pytest.mark.parametrize("mode", MODES)
def test_sigterm_sets_stop_event_workers_wait_main_joins(tmp_path: Path, mode: str) -> None:
    assert_same_as_plain_python(tmp_path, SEND_LATER + """
import signal, threading
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: stop.set())
workers = [threading.Thread(target=stop.wait) for _ in range(2)]
for w in workers:
    w.start()
send_later("TERM")
for w in workers:
    w.join()
print("stopped")
""", mode)


@posix_only
@pytest.mark.parametrize("mode", MODES)
def test_sigterm_releases_lock_a_worker_waits_on(tmp_path: Path, mode: str) -> None:
    assert_same_as_plain_python(tmp_path, SEND_LATER + """
import signal, threading
gate = threading.Lock()
gate.acquire()
signal.signal(signal.SIGTERM, lambda *a: gate.release())
def worker():
    gate.acquire()
    print("through")
w = threading.Thread(target=worker)
w.start()
send_later("TERM")
w.join()
""", mode)


@posix_only
@pytest.mark.parametrize("mode", MODES)
def test_sigusr1_notifies_condition(tmp_path: Path, mode: str) -> None:
    assert_same_as_plain_python(tmp_path, SEND_LATER + """
import signal, threading
cond = threading.Condition()
ready = []
def handler(*a):
    with cond:
        ready.append(1)
        cond.notify_all()
signal.signal(signal.SIGUSR1, handler)
def worker():
    with cond:
        while not ready:
            cond.wait()
w = threading.Thread(target=worker)
w.start()
send_later("USR1")
w.join()
print("notified")
""", mode)


@posix_only
@pytest.mark.parametrize("mode", MODES)
def test_sighup_releases_semaphore_main_waits_directly(tmp_path: Path, mode: str) -> None:
    assert_same_as_plain_python(tmp_path, SEND_LATER + """
import signal, threading
sem = threading.Semaphore(0)
signal.signal(signal.SIGHUP, lambda *a: sem.release())
send_later("HUP")
sem.acquire()
print("acquired")
""", mode)


@posix_only
@pytest.mark.parametrize("mode", MODES)
def test_setitimer_alarm_sets_event_main_waits(tmp_path: Path, mode: str) -> None:
    assert_same_as_plain_python(tmp_path, """
import signal, threading
done = threading.Event()
signal.signal(signal.SIGALRM, lambda *a: done.set())
signal.setitimer(signal.ITIMER_REAL, 0.3)
t = threading.Thread(target=done.wait)
t.start()
done.wait()
t.join()
print("alarm")
""", mode)


@posix_only
@pytest.mark.parametrize("mode", MODES)
def test_alarm_handler_releases_lock_held_by_main_in_join(tmp_path: Path, mode: str) -> None:
    # main holds `busy` (bare acquire) and joins the worker that waits for it:
    # a cycle only if nobody else could release `busy`; the alarm handler does.
    assert_same_as_plain_python(tmp_path, """
import signal, threading
busy = threading.Lock()
busy.acquire()
signal.signal(signal.SIGALRM, lambda *a: busy.release())
signal.alarm(1)
def worker():
    with busy:
        print("worker ran")
w = threading.Thread(target=worker)
w.start()
w.join()
""", mode)


# ------------------------------------------------------------ native threads

NATIVE_C = r"""
#include <pthread.h>
#include <unistd.h>
typedef void (*callback_t)(void);
static callback_t later_cb;
static unsigned later_us;
static void *run(void *arg) { (void)arg; usleep(later_us); later_cb(); return 0; }
int call_later(callback_t cb, unsigned us) {
    pthread_t t; later_cb = cb; later_us = us;
    if (pthread_create(&t, 0, run, 0)) return -1;
    return pthread_detach(t);
}
"""

NATIVE_PY = """
import ctypes, sys, threading
lib = ctypes.CDLL(sys.argv[1] if len(sys.argv) > 1 else "./libnative.so")
CALLBACK = ctypes.CFUNCTYPE(None)
def call_later(fn, us=300000):
    cb = CALLBACK(fn)
    call_later.keep = cb  # alive until it has run
    assert lib.call_later(cb, us) == 0
"""


@pytest.fixture
def native_lib(tmp_path: Path) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None or not Path("/proc/self/task").exists():
        pytest.skip("needs a C compiler and /proc/self/task")
    src = tmp_path / "native.c"
    src.write_text(NATIVE_C)
    lib = tmp_path / "libnative.so"
    subprocess.run([cc, "-shared", "-fPIC", "-pthread", "-o", str(lib), str(src)],
                   check=True, capture_output=True, timeout=60)
    return lib


@pytest.mark.parametrize("mode", MODES)
def test_native_thread_sets_event_main_waits(tmp_path: Path, native_lib: Path,
                                             mode: str) -> None:
    assert_same_as_plain_python(tmp_path, NATIVE_PY + """
done = threading.Event()
call_later(done.set)
done.wait()
print("woken by a native thread")
""", mode)


@pytest.mark.parametrize("mode", MODES)
def test_native_thread_releases_semaphore_workers_and_main_blocked(
        tmp_path: Path, native_lib: Path, mode: str) -> None:
    assert_same_as_plain_python(tmp_path, NATIVE_PY + """
sem = threading.Semaphore(0)
def worker():
    sem.acquire()
    print("worker through")
w = threading.Thread(target=worker)
w.start()
call_later(sem.release)
w.join()
""", mode)


@pytest.mark.parametrize("mode", MODES)
def test_native_thread_releases_lock_held_by_main(tmp_path: Path, native_lib: Path,
                                                  mode: str) -> None:
    assert_same_as_plain_python(tmp_path, NATIVE_PY + """
latch = threading.Lock()
latch.acquire()
call_later(latch.release)
latch.acquire()  # waits on a lock it holds: the native thread opens it
print("latch opened")
""", mode)


# ------------------------------------------------- Locks used as hand-offs

@pytest.mark.parametrize("mode", MODES)
def test_latch_closed_by_main_opened_by_timer(tmp_path: Path, mode: str) -> None:
    # A worker holding `data` waits at the latch; main waits for `data`.
    assert_same_as_plain_python(tmp_path, """
import threading
latch = threading.Lock()
data = threading.Lock()
latch.acquire()
holding = threading.Event()
def worker():
    with data:
        holding.set()
        latch.acquire()   # opened by the timer
        latch.release()
w = threading.Thread(target=worker)
w.start()
holding.wait()
threading.Timer(0.3, latch.release).start()
with data:
    print("main got data")
w.join()
""", mode)


@pytest.mark.parametrize("mode", MODES)
def test_in_progress_flag_of_exited_thread_released_by_worker(tmp_path: Path,
                                                              mode: str) -> None:
    assert_same_as_plain_python(tmp_path, """
import threading, time
in_progress = threading.Lock()
starter = threading.Thread(target=in_progress.acquire)
starter.start()
starter.join()           # exits holding the flag
def finisher():
    time.sleep(0.3)
    in_progress.release()
threading.Thread(target=finisher).start()
in_progress.acquire()    # owner exited, but the finisher clears the flag
print("flag cleared")
""", mode)


@pytest.mark.parametrize("mode", MODES)
def test_flag_set_by_pool_task_cleared_by_another_thread(tmp_path: Path, mode: str) -> None:
    assert_same_as_plain_python(tmp_path, """
import threading, time
from concurrent.futures import ThreadPoolExecutor
flag = threading.Lock()
with ThreadPoolExecutor(1) as pool:
    pool.submit(flag.acquire).result()
    def clear():
        time.sleep(0.3)
        flag.release()
    threading.Thread(target=clear).start()
    flag.acquire()
    print("flag cleared")
""", mode)


@pytest.mark.parametrize("mode", MODES)
def test_main_joins_worker_waiting_on_bare_lock_released_by_third(tmp_path: Path,
                                                                 mode: str) -> None:
    # main took `ticket` and joins the worker that waits for it; a third
    # thread (sleeping, so running) hands the ticket over.
    assert_same_as_plain_python(tmp_path, """
import threading, time
ticket = threading.Lock()
ticket.acquire()
def worker():
    with ticket:
        print("worker has the ticket")
w = threading.Thread(target=worker)
w.start()
threading.Thread(target=lambda: (time.sleep(0.3), ticket.release())).start()
w.join()
""", mode)


# ------------------------------------------------- true deadlocks still raise

DEADLOCK_STATUS = 3


def _raises_deadlock(tmp_path: Path, source: str, mode: str) -> str:
    under = _run(tmp_path, source, mode, under_lockwise=True)
    assert under.returncode == DEADLOCK_STATUS, (under.returncode, under.stderr)
    assert "DeadlockError" in under.stderr
    return under.stderr


@posix_only
@pytest.mark.parametrize("mode", MODES)
def test_with_block_cycle_raises_despite_signal_handler(tmp_path: Path, mode: str) -> None:
    # Ownership cycles through with-blocks stay provable while a handler is set.
    _raises_deadlock(tmp_path, """
import signal, threading
signal.signal(signal.SIGTERM, lambda *a: None)
a, b = threading.Lock(), threading.Lock()
barrier = threading.Barrier(2)
def worker(first, second):
    with first:
        barrier.wait()
        with second:
            pass
ts = [threading.Thread(target=worker, args=p) for p in ((a, b), (b, a))]
for t in ts:
    t.start()
for t in ts:
    t.join(10)
raise SystemExit(3 if any(t.is_alive() for t in ts) else 0)
""", mode)


@posix_only
@pytest.mark.parametrize("mode", MODES)
def test_self_wait_in_with_block_raises_despite_handler_and_running_thread(
        tmp_path: Path, mode: str) -> None:
    # The lock was taken in a with-block by this very thread: nobody else will
    # release it, even though a handler is installed and another thread runs.
    out = _raises_deadlock(tmp_path, """
import signal, threading, time
signal.signal(signal.SIGTERM, lambda *a: None)
stop = threading.Event()
threading.Thread(target=lambda: stop.wait(30), daemon=True).start()
lock = threading.Lock()
with lock:
    lock.acquire()
""", mode)
    assert "waits for itself" in out


@pytest.mark.parametrize("mode", MODES)
def test_exited_owner_of_bare_lock_raises_when_nobody_is_left(tmp_path: Path,
                                                              mode: str) -> None:
    out = _raises_deadlock(tmp_path, """
import threading
flag = threading.Lock()
leaver = threading.Thread(target=flag.acquire, name="Leaver")
leaver.start()
leaver.join()
flag.acquire()
""", mode)
    assert "Leaver" in out and "exited" in out


# ------------------------------------------- unproven cycles: reported, not raised


def test_unproven_cycle_is_reported_as_hang_never_raised(runner: Any) -> None:
    import threading
    import time

    import lockwise
    from lockwise import DeadlockError

    lockwise.configure(unproven_after=0.2)
    a, b = lockwise.Lock(), lockwise.Lock()
    barrier = threading.Barrier(2)

    def worker(first: Any, second: Any) -> str:
        first.acquire()  # bare: another thread may release it (hand-off)
        barrier.wait(5)
        second.acquire()
        for lock in (second, first):
            try:
                lock.release()
            except RuntimeError:
                pass  # released for us by the main thread
        return "done"

    runner.start(lambda: worker(a, b), "T1")
    runner.start(lambda: worker(b, a), "T2")
    deadline = time.monotonic() + 10
    hangs: list[Any] = []
    while not hangs and time.monotonic() < deadline:
        hangs = [f for f in lockwise.findings("hang")
                 if f.details.get("rule") == "unproven-cycle"]
        time.sleep(0.02)
    assert hangs, lockwise.findings()
    assert "not raised" in hangs[0].summary and "T1" in hangs[0].summary
    a.release()  # the hand-off lockwise could not rule out: the program goes on
    runner.join()
    assert not any(isinstance(e, DeadlockError) for e in runner.errors.values()), runner.errors
    assert runner.results == {"T1": "done", "T2": "done"}
    assert not lockwise.findings("deadlock")
    assert len(hangs) == 1


# ------------------------------- the program's exceptions reach the program


class _ProgramTimeout(Exception):
    """What a SIGALRM timeout decorator raises (an Exception, not a BaseException)."""


def test_exception_from_program_code_inside_a_check_reaches_the_program(runner: Any) -> None:
    # A signal handler or finalizer that raises while lockwise checks a wait:
    # its exception is the program's, not an internal error to swallow.
    import threading

    import lockwise
    from lockwise import _findings, _waitfor

    def program_code(ts: Any) -> None:
        raise _ProgramTimeout("timed out")

    lock = lockwise.Lock()
    held = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with lock:
            held.set()
            release.wait(10)

    runner.start(holder, "Holder")
    assert held.wait(5)
    errors_before = len(_findings.internal_errors())
    _waitfor.wait_checks.append(program_code)
    try:
        with pytest.raises(_ProgramTimeout):
            lock.acquire()
    finally:
        _waitfor.wait_checks.remove(program_code)
        release.set()
    runner.join()
    assert len(_findings.internal_errors()) == errors_before
    assert lock.acquire(timeout=5)  # nothing leaked by the interrupted wait
    lock.release()


@pytest.mark.timeout(60, method="thread")  # pytest-timeout's signal method uses SIGALRM too
@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs setitimer")
def test_sigalrm_timeout_exception_interrupts_untimed_acquire(runner: Any) -> None:
    import threading

    import lockwise

    def on_alarm(signum: int, frame: Any) -> None:
        raise _ProgramTimeout("alarm")

    lock = lockwise.Lock()
    held = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with lock:
            held.set()
            release.wait(20)

    runner.start(holder, "Holder")
    assert held.wait(5)
    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        for delay in (0.001, 0.003, 0.01, 0.02, 0.05, 0.1):
            # Armed inside the block: on a loaded machine a 1 ms alarm may fire
            # before acquire() starts (seen on 3.10: in pytest.raises itself).
            with pytest.raises(_ProgramTimeout):
                signal.setitimer(signal.ITIMER_REAL, delay)
                lock.acquire()  # untimed: only the alarm ends it, as with threading
            signal.setitimer(signal.ITIMER_REAL, 0)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        release.set()
    runner.join()
    assert lock.acquire(timeout=5)
    lock.release()
