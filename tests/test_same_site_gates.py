"""Gate locks among locks of one creation site (compared as instances).

A lock held around both orders of an inversion serialises them: no
deadlock is possible, whether the gate and the inverted locks come from
different lines (classes) or from one line (instances).
"""

from __future__ import annotations

import threading

import lockwise

from .conftest import Runner


def _run(runner: Runner, *bodies: object) -> None:
    for i, body in enumerate(bodies):
        runner.start(body, f"T{i + 1}")  # type: ignore[arg-type]
        runner.join()  # one after the other: the order is recorded, no deadlock
        runner.threads.clear()


def _orders(g: lockwise.Lock | None, a: lockwise.Lock, b: lockwise.Lock) -> tuple[object, object]:
    def one() -> None:
        if g is not None:
            with g, a, b:
                pass
        else:
            with a, b:
                pass

    def two() -> None:
        if g is not None:
            with g, b, a:
                pass
        else:
            with b, a:
                pass

    return one, two


def _one_site(n: int) -> list[lockwise.Lock]:
    """``n`` locks of one creation site (one line, one target: one class).
    (``g, a, b = Lock(), Lock(), Lock()`` makes three classes on 3.11+,
    named g, a and b.)"""
    return [lockwise.Lock() for _ in range(n)]


def test_same_line_gate_suppresses_the_inversion(runner: Runner) -> None:
    lockwise.configure(on_lock_order="log")
    g, a, b = _one_site(3)
    _run(runner, *_orders(g, a, b))
    assert lockwise.findings("lock-order") == []


def test_same_line_without_gate_is_reported(runner: Runner) -> None:
    lockwise.configure(on_lock_order="log")
    g, a, b = _one_site(3)
    del g
    _run(runner, *_orders(None, a, b))
    found = lockwise.findings("lock-order")
    assert len(found) == 1 and found[0].details["level"] == "instance"


def test_gate_from_a_list_comprehension(runner: Runner) -> None:
    lockwise.configure(on_lock_order="log")
    locks = [lockwise.RLock() for _ in range(4)]
    gate, x, y, z = locks

    def one() -> None:
        with gate, x, y, z:
            pass

    def two() -> None:
        with gate, z, x:
            pass

    _run(runner, one, two)
    assert lockwise.findings("lock-order") == []
    # The same orders without the gate: an inversion (through the same locks).
    _run(runner, lambda: x.acquire() and z.acquire() and (z.release(), x.release()),
         lambda: z.acquire() and x.acquire() and (x.release(), z.release()))
    assert len(lockwise.findings("lock-order")) == 1


def test_different_gate_instances_do_not_serialise(runner: Runner) -> None:
    """Two different gate instances of one site are two gates: no suppression."""
    lockwise.configure(on_lock_order="log")
    g1, g2, a, b = (lockwise.Lock() for _ in range(4))
    one, _ = _orders(g1, a, b)
    _, two = _orders(g2, a, b)
    _run(runner, one, two)
    assert len(lockwise.findings("lock-order")) == 1


def test_gate_of_another_site_with_same_site_pair(runner: Runner) -> None:
    lockwise.configure(on_lock_order="log")
    gate = lockwise.Lock()
    a, b = _one_site(2)
    _run(runner, *_orders(gate, a, b))
    assert lockwise.findings("lock-order") == []
    assert threading.active_count() >= 1
