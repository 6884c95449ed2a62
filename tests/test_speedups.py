"""The C accelerator: which implementation is active, and parity with the pure one.

Every test taking ``impl`` runs against the pure classes and, when the C
accelerator was built, against the accelerated ones, whatever LOCKWISE_PURE
says; the rest of the suite runs against the selected implementation (run it
once normally and once with LOCKWISE_PURE=1 to cover both).
"""

from __future__ import annotations

import gc
import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
import weakref
from typing import Any

import pytest

import lockwise
from lockwise import _primitives

HAVE_C = importlib.util.find_spec("lockwise._speedups") is not None

IMPLS: list[Any] = [pytest.param((_primitives.PureLock, _primitives.PureRLock), id="pure")]
if HAVE_C:
    from lockwise import _accel

    IMPLS.append(pytest.param(
        (_accel.accelerate(_primitives.PureLock, _accel.LockBase),
         _accel.accelerate(_primitives.PureRLock, _accel.RLockBase)), id="c"))


@pytest.fixture(params=IMPLS)
def impl(request: Any) -> Any:
    lockwise.reset()
    yield request.param
    lockwise.reset()


def _which(env_pure: str | None) -> str:
    env = dict(os.environ)
    env.pop("LOCKWISE_PURE", None)
    if env_pure is not None:
        env["LOCKWISE_PURE"] = env_pure
    code = ("import lockwise, lockwise._primitives as p; "
            "assert lockwise.Lock is p.Lock and lockwise.RLock is p.RLock; "
            "assert (type(lockwise.Lock()) is p.PureLock) == (p.IMPLEMENTATION == 'pure'); "
            "print(p.IMPLEMENTATION)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_lockwise_pure_selects_pure() -> None:
    assert _which("1") == "pure"


def test_default_selects_c_when_built() -> None:
    expected = "c" if HAVE_C else "pure"
    assert _which(None) == expected
    if os.environ.get("LOCKWISE_REQUIRE_SPEEDUPS") == "1":
        assert HAVE_C, "the C accelerator was not built"


def test_active_implementation_matches_environment() -> None:
    if os.environ.get("LOCKWISE_PURE") == "1":
        assert _primitives.IMPLEMENTATION == "pure"
        assert lockwise.Lock is _primitives.PureLock
    else:
        assert ("c" if HAVE_C else "pure") == _primitives.IMPLEMENTATION
    assert lockwise.Lock.__name__ == "Lock" and lockwise.RLock.__name__ == "RLock"
    assert lockwise.Lock.__module__ == "lockwise"


def test_names_repr_and_fields(impl: Any) -> None:
    Lock, RLock = impl
    lock = Lock()
    rlock = RLock()
    assert type(lock).__name__ == "Lock" and type(rlock).__name__ == "RLock"
    assert repr(lock).startswith("<unlocked lockwise.Lock object at ")
    assert "'lock'" in repr(lock)
    assert not hasattr(lock, "_count") and rlock._count == 0
    assert lock._owner is None and lock._serial == 0 and lock._acq is None
    assert weakref.ref(lock)() is lock


def test_acquired_at_is_the_callers_line(impl: Any) -> None:
    Lock, RLock = impl
    for lock in (Lock(), RLock()):
        for _ in range(3):  # repeated: the C side reuses the recorded site
            line = sys._getframe().f_lineno + 1
            lock.acquire()
            assert lock.acquired_at == f"{__file__}:{line}"
            lock.release()
        with lock:
            line = sys._getframe().f_lineno - 1
            assert lock.acquired_at == f"{__file__}:{line}"
            assert lock.owner is threading.current_thread()
        lock._acq = None  # Python assignments must not be shadowed by the C cache
        with lock:
            assert lock.acquired_at == f"{__file__}:{sys._getframe().f_lineno - 1}"


def test_internal_frames_are_skipped(impl: Any) -> None:
    Lock, _ = impl
    lock = Lock()
    cond = threading.Condition(lock)  # threading's frames call acquire
    with cond:
        line = sys._getframe().f_lineno - 1
        assert lock.acquired_at == f"{__file__}:{line}"


def test_held_list_and_state(impl: Any) -> None:
    from lockwise._state import current_state

    Lock, RLock = impl
    a, b, r = Lock(), Lock(), RLock()
    ts = current_state()
    with a, b, r, r:
        assert ts.held == [a, b, r] and r._count == 2
        assert a._owner is ts and r._owner is ts
        assert lockwise.held_locks() == [a, b, r]
    assert ts.held == [] and r._count == 0 and a._owner is None


def test_release_errors(impl: Any) -> None:
    Lock, RLock = impl
    with pytest.raises(RuntimeError):
        Lock().release()
    with pytest.raises(RuntimeError, match="un-acquired"):
        RLock().release()
    r = RLock()
    r.acquire()
    errors: list[BaseException] = []

    def other() -> None:
        try:
            r.release()
        except RuntimeError as exc:
            errors.append(exc)

    t = threading.Thread(target=other)
    t.start()
    t.join(10)
    assert len(errors) == 1
    r.release()


def test_argument_validation(impl: Any) -> None:
    Lock, RLock = impl
    for lock in (Lock(), RLock()):
        with pytest.raises(ValueError):
            lock.acquire(False, 1)
        with pytest.raises(ValueError):
            lock.acquire(timeout=-5)
        with pytest.raises(TypeError):
            lock.acquire(True, -1, 3)  # type: ignore[call-arg]
        with pytest.raises(TypeError):
            lock.acquire(bogus=1)  # type: ignore[call-arg]
        assert lock.acquire(blocking=True, timeout=-1.0) is True
        lock.release()
        assert lock.acquire(timeout=0.01) is True
        lock.release()


def test_non_blocking_and_timed_contention(impl: Any) -> None:
    Lock, RLock = impl
    for lock in (Lock(), RLock()):
        lock.acquire()
        results: list[bool] = []

        def other(lock: Any = lock, results: list[bool] = results) -> None:
            results.append(lock.acquire(False))
            results.append(lock.acquire(timeout=0.01))

        t = threading.Thread(target=other)
        t.start()
        t.join(10)
        assert results == [False, False]
        lock.release()


def test_release_by_another_thread_marks_a_signal(impl: Any) -> None:
    Lock, _ = impl
    lock = Lock()
    lock.acquire()
    t = threading.Thread(target=lock.release)
    t.start()
    t.join(10)
    assert not lock.locked() and lock._site.signal and lock._owner is None


def test_first_use_in_a_new_thread(impl: Any) -> None:
    from lockwise._state import current_state

    Lock, RLock = impl
    out: list[bool] = []

    def body() -> None:
        r = RLock()
        with Lock():
            pass
        r.acquire()  # the RLock path creates the state
        out.append(r._owner is current_state())
        r.release()

    for _ in range(3):
        t = threading.Thread(target=body)
        t.start()
        t.join(10)
    assert out == [True, True, True]


def test_lock_order_inversion_same_report(impl: Any) -> None:
    Lock, RLock = impl
    a = Lock()
    b = RLock()
    previous = lockwise.configure(on_lock_order="raise")
    try:
        with a, b:
            pass
        with b:
            line = sys._getframe().f_lineno + 2
            with pytest.raises(lockwise.PotentialDeadlockError) as info:
                a.acquire()
        assert not a.locked()
        finding = info.value.finding
        cycle = finding.details["cycle"]
        lines = [e["second_stack"][-1]["line"] for e in cycle]
        assert line in lines
        assert all(e["second_stack"][-1]["file"] == __file__ for e in cycle)
    finally:
        lockwise.configure(**previous)


def test_deadlock_detected(impl: Any) -> None:
    Lock, _ = impl
    a, b = Lock(), Lock()
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def worker(first: Any, second: Any) -> None:
        with first:
            barrier.wait(10)
            try:
                with second:
                    pass
            except lockwise.DeadlockError as exc:
                errors.append(exc)

    previous = lockwise.configure(on_lock_order="ignore")
    try:
        threads = [threading.Thread(target=worker, args=(a, b)),
                   threading.Thread(target=worker, args=(b, a))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert not any(t.is_alive() for t in threads)
    finally:
        lockwise.configure(**previous)
    assert len(errors) == 1


def test_collected_in_cycles_and_visible_to_gc(impl: Any) -> None:
    Lock, RLock = impl
    lock = RLock()
    assert gc.is_tracked(lock)
    holder: dict[str, Any] = {"lock": lock}
    lock._serial = holder  # a reference cycle through the C fields
    ref = weakref.ref(lock)
    del lock, holder
    gc.collect()
    assert ref() is None


def test_at_fork_reinit(impl: Any) -> None:
    Lock, RLock = impl
    for lock in (Lock(), RLock()):
        lock.acquire()
        lock._at_fork_reinit()
        assert not lock.locked() and lock._owner is None
        with lock:
            assert lock.acquired_at is not None


# ---------------------------------------------------------------- InnerLock

needs_c = pytest.mark.skipif(not HAVE_C, reason="the C accelerator was not built")


@needs_c
def test_accelerated_locks_use_the_c_inner_lock() -> None:
    from lockwise._speedups import InnerLock

    Lock, RLock = IMPLS[1].values[0]
    assert type(Lock()._inner) is InnerLock and type(RLock()._inner) is InnerLock
    assert type(_primitives.PureLock()._inner) is type(threading.Lock())


_ARGS: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    ((), {}), ((False,), {}), ((True,), {}), ((0,), {}), ((1, 0),  {}), ((True, 0.01), {}),
    ((), {"timeout": 0}), ((), {"blocking": False}), ((True, -1.0), {}),
    ((False, 1), {}), ((True, -2), {}), ((True, -0.5), {}), ((True, 1e300), {}),
    ((True, float("nan")), {}), ((True, float("inf")), {}), ((True, "x"), {}), ((True, None), {}),
    ((True, 2**70), {}), ((True, 10**12), {}), ((True, 5e9), {}), ((1, 2, 3), {}),
    ((), {"foo": 1}), ((True,), {"blocking": 1}), ((), {"blocking": False, "timeout": 1}),
    (("x",), {}),
]


@needs_c
@pytest.mark.parametrize("args,kwargs", _ARGS)
def test_inner_lock_arguments_as_thread_lock(args: tuple[Any, ...],
                                             kwargs: dict[str, Any]) -> None:
    from lockwise._speedups import InnerLock

    def outcome(lock: Any) -> Any:
        try:
            got = lock.acquire(*args, **kwargs)
        except Exception as exc:
            return type(exc), str(exc)
        return got, lock.locked()

    expected = outcome(threading.Lock())
    assert outcome(InnerLock()) == expected
    blocking = kwargs.get("blocking", args[0] if args else True)
    timeout = kwargs.get("timeout", args[1] if len(args) > 1 else -1)
    if expected[0] is True and blocking and (timeout == -1 or timeout > 1):
        return  # would wait (nearly) forever on a held lock
    held, other = InnerLock(), threading.Lock()
    held.acquire()
    other.acquire()
    assert outcome(held) == outcome(other)  # held: a try fails, errors stay the same


@needs_c
def test_inner_lock_protocol() -> None:
    from lockwise._speedups import InnerLock

    lock = InnerLock()
    assert not lock.locked() and "unlocked" in repr(lock)
    with pytest.raises(RuntimeError, match="release unlocked lock"):
        lock.release()
    assert lock.acquire() is True and lock.locked() and "locked" in repr(lock)
    assert lock.acquire(False) is False
    t0 = time.monotonic()
    assert lock.acquire(True, 0.05) is False
    assert time.monotonic() - t0 >= 0.04
    threading.Timer(0.05, lock.release).start()
    assert lock.acquire(timeout=10) is True
    lock.release()
    with lock:
        assert lock.locked()
    assert not lock.locked()
    lock.acquire()
    lock._at_fork_reinit()
    assert not lock.locked() and lock.acquire(False)
    lock.release()
    with pytest.raises(TypeError):
        InnerLock(1)  # type: ignore[call-arg]


@needs_c
@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs setitimer")
def test_inner_lock_wait_is_interruptible() -> None:
    from lockwise._speedups import InnerLock

    lock = InnerLock()
    lock.acquire()
    calls: list[int] = []

    def interrupt(*_: Any) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        # A handler that returns: the wait goes on for the time left.
        signal.setitimer(signal.ITIMER_REAL, 0.02)
        t0 = time.monotonic()
        assert lock.acquire(timeout=0.2) is False
        assert time.monotonic() - t0 >= 0.18 and calls == [1]
        # A handler that raises: the wait ends with its exception.
        with pytest.raises(KeyboardInterrupt):  # armed inside: it may fire at once
            signal.setitimer(signal.ITIMER_REAL, 0.02)
            lock.acquire()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    lock.release()


@needs_c
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_lock_held_by_another_thread_at_fork_is_reinit_in_child(impl: Any) -> None:
    Lock, _RLock = impl
    lock = Lock()
    taken, done = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            taken.set()
            done.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    taken.wait(10)
    try:
        pid = os.fork()
        if pid == 0:  # child: the holder does not exist here
            code = 1
            try:
                lock._at_fork_reinit()
                if lock.acquire(timeout=5):
                    lock.release()
                    code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    finally:
        done.set()
        t.join(10)


@pytest.mark.skipif(_primitives.IMPLEMENTATION != "c", reason="the C accelerator is not in use")
def test_new_rlock_matches_rlock_at_site_of() -> None:
    from lockwise import _sites

    def made_here() -> tuple[Any, Any]:
        frame = sys._getframe()
        return _accel.new_rlock(frame), _primitives.rlock_at(_sites.site_of(frame))

    for _ in range(2):  # the first call fills the site cache, the second reads it
        fast, reference = made_here()
        assert fast._site is reference._site
        assert fast._site.lineno == made_here.__code__.co_firstlineno + 2
        for field in ("_owner", "_acq", "_serial", "_count"):
            assert getattr(fast, field) == getattr(reference, field)
        assert type(fast) is _primitives.RLock and not fast.locked()
        with fast:
            assert fast.count == 1 and fast._is_owned()
    # A frame inside lockwise is skipped up to its user caller, as site_of does.
    internal = lockwise.Condition()
    assert internal._site is internal._lock._site
    assert internal._site.filename == __file__
    with pytest.raises(TypeError):
        _accel.new_rlock(42)


def test_condition_wait_zero_lets_other_threads_in() -> None:
    # wait(0) queues no waiter but still releases the lock for a moment: a
    # thread blocked on the lock gets in, and the poller sees its change.
    cond = lockwise.Condition()
    seen = threading.Event()
    flag = [False]

    def setter() -> None:
        seen.set()
        with cond:
            flag[0] = True

    deadline = time.monotonic() + 10
    with cond:
        worker = threading.Thread(target=setter, daemon=True)
        worker.start()
        assert seen.wait(10)
        while not flag[0] and time.monotonic() < deadline:
            assert cond.wait(0) is False
            assert cond._is_owned() and not cond._waiters
    worker.join(10)
    assert flag[0]


@pytest.mark.skipif(_primitives.IMPLEMENTATION != "c", reason="the C accelerator is not in use")
def test_same_site_nesting_is_validated_in_c(monkeypatch: pytest.MonkeyPatch) -> None:
    from lockwise import _order

    lockwise.reset()
    calls = []
    real_note = _order.note

    def counting_note(ts: Any, lock: Any) -> Any:
        calls.append(lock)
        return real_note(ts, lock)

    monkeypatch.setattr(_order, "note", counting_note)
    first, second = [_primitives.Lock() for _ in range(2)]  # one site
    for _ in range(20):
        with first, second:
            pass
    assert calls == [second]  # validated once in Python, then found by C
    third = _primitives.Lock()
    with second, third:  # distinct site: the class-level key, also once
        pass
    with second, third:
        pass
    assert calls == [second, third]


@pytest.mark.skipif(not HAVE_C, reason="the C accelerator is not built")
@pytest.mark.timeout(60)
def test_a_contender_behind_a_queue_registers_at_once() -> None:
    # Behind two threads already blocked on the inner lock, a contended acquire
    # skips the quiet wait (which would time out anyway, costing a wake-up) and
    # registers its wait at once. A long quiet wait makes the difference visible.
    from lockwise import _accel

    Lock = _accel.accelerate(_primitives.PureLock, _accel.LockBase)
    lock = Lock(name="queued")
    previous = _accel.set_quiet_wait(5_000_000)
    threads: list[threading.Thread] = []
    try:
        lock.acquire()

        def contend() -> None:
            with lock:
                pass

        for _ in range(3):
            threads.append(threading.Thread(target=contend, daemon=True))
            threads[-1].start()
            time.sleep(0.2)  # the first two sit in their 5 s quiet waits: unregistered
        deadline = time.monotonic() + 2.0
        while threads[2].ident not in lock.waiters and time.monotonic() < deadline:
            time.sleep(0.01)
        assert lock.waiters == [threads[2].ident]
    finally:
        _accel.set_quiet_wait(previous)
        lock.release()
        for thread in threads:
            thread.join(10)
    assert not any(thread.is_alive() for thread in threads)
    assert not lock.locked()


@pytest.mark.timeout(60)
def test_a_condition_waiter_behind_two_others_registers_at_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Behind two unnotified waiters, a Condition.wait skips the quiet wait and
    # registers its wait at once (both implementations: this is Python code).
    from lockwise import _state, _waitfor

    monkeypatch.setattr(_waitfor, "_QUIET_WAIT", 5.0)  # the first two stay unregistered
    cond = lockwise.Condition(lockwise.Lock())
    go = False

    def registered() -> list[int]:
        return [ts.ident for ts in list(_state.states.values())
                if isinstance(ts.waiting, _waitfor.CondWaiter) and ts.waiting.cond is cond]

    def wait() -> None:
        with cond:
            cond.wait_for(lambda: go)

    threads = [threading.Thread(target=wait, daemon=True) for _ in range(3)]
    try:
        for thread in threads:
            thread.start()
            time.sleep(0.2)
        deadline = time.monotonic() + 2.0
        while not registered() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert registered() == [threads[2].ident]
    finally:
        with cond:
            go = True
            cond.notify_all()
        for thread in threads:
            thread.join(10)
    assert not any(thread.is_alive() for thread in threads)


@pytest.mark.skipif(_primitives.IMPLEMENTATION != "c", reason="the C classes are not in use")
def test_every_lock_class_has_its_own_c_method_descriptors() -> None:
    # CPython specializes lock.acquire() into a direct C call only when the
    # descriptor belongs to type(lock) exactly; an inherited one from the C base
    # sent every call of every lockwise lock down the generic call path.
    from lockwise import _accel

    class Sub(lockwise.Lock):  # a program's own subclass
        pass

    class Overriding(lockwise.RLock):
        def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
            return bool(super().acquire(blocking, timeout))

    from lockwise import _mp

    with lockwise.installed():
        made = [type(threading.Lock()), type(threading.RLock())]
    assert all(issubclass(cls, (lockwise.Lock, lockwise.RLock)) for cls in made)
    for cls in (lockwise.Lock, lockwise.RLock, Sub, Overriding, _mp.MPLock, _mp.MPRLock, *made):
        for name in ("acquire", "release", "__enter__", "__exit__", "_is_owned"):
            attr = vars(cls).get(name)
            if cls is Overriding and name == "acquire":
                assert callable(attr) and not isinstance(attr, type(lockwise.Lock.release))
                continue
            assert attr is not None and attr.__objclass__ is cls, (cls, name)
    with pytest.raises(TypeError, match="not a lockwise lock class"):
        _accel.own_methods(int, ["acquire"])
    with pytest.raises(ValueError, match="is not a method of"):
        _accel.own_methods(Sub, ["locked"])
    # The subclasses behave as the class they extend.
    for lock in (Sub(), Overriding()):
        assert lock.acquire() and lock._is_owned()
        lock.release()
        with lock:
            assert lock._is_owned()
        assert not lock.locked()
