"""``lockwise confirm`` against frontrun on the programs of tests/confirm_programs.

    python benchmarks/confirm_vs_frontrun.py lockwise          # lockwise confirm, each program
    frontrun python benchmarks/confirm_vs_frontrun.py frontrun # frontrun.explore (DPOR)

Prints one line per program: whether a deadlock was reported, and the wall
time. lockwise runs each unmodified program (collecting run + directed runs,
as a user would); frontrun needs the threads' bodies as ``workers`` of
``frontrun.explore``: the adapters below are those same bodies. A deadlock
reported on gate / joined / event_ordered would be a false confirmation.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
PROGRAMS = os.path.join(HERE, "..", "tests", "confirm_programs")
NAMES = ["ab_ba", "ring3", "observer", "logging_handler", "philosophers", "rlock_nesting",
         "gate", "joined", "event_ordered"]


def run_lockwise() -> None:
    for name in NAMES:
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "c.json")
            start = time.monotonic()
            proc = subprocess.run([sys.executable, "-m", "lockwise", "confirm", "--json", out,
                                   os.path.join(PROGRAMS, f"{name}.py")],
                                  capture_output=True, text=True, timeout=600)
            wall = time.monotonic() - start
            with open(out, encoding="utf-8") as f:
                conf = [x for x in json.load(f)["findings"]
                        if x["kind"] == "lock-order"][0]["confirmation"]
        print(json.dumps({"tool": "lockwise", "program": name, "status": proc.returncode,
                          "deadlock": conf["status"] == "confirmed", "runs": conf["runs"],
                          "confirm_s": conf.get("seconds"), "wall_s": round(wall, 2),
                          "reason": conf["reason"][:60]}), flush=True)


# ------------------------------------------------------------ frontrun side


class _Pair:
    def __init__(self) -> None:
        self.a = threading.Lock()
        self.b = threading.Lock()
        self.c = threading.Lock()
        self.gate = threading.BoundedSemaphore(1)
        self.done = threading.Event()
        self.forks = [threading.Lock() for _ in range(5)]
        self.r1 = threading.RLock()
        self.r2 = threading.RLock()


def _nest(x: Any, y: Any) -> None:
    with x, y:
        pass


def _observer() -> tuple[Callable[[], Any], list[Callable[[Any], None]]]:
    class Subject:
        def __init__(self) -> None:
            self.lock = threading.RLock()
            self.observers: list[Callable[[int], None]] = []
            self.value = 0

        def set(self, value: int) -> None:
            with self.lock:
                self.value = value
                for callback in self.observers:
                    callback(value)

        def get(self) -> int:
            with self.lock:
                return self.value

    class View:
        def __init__(self) -> None:
            self.lock = threading.Lock()
            self.subject = Subject()
            self.subject.observers.append(self.changed)

        def changed(self, value: int) -> None:
            with self.lock:
                pass

        def render(self) -> int:
            with self.lock:
                return self.subject.get()

    return View, [lambda v: v.subject.set(1), lambda v: v.render()]


def _logging() -> tuple[Callable[[], Any], list[Callable[[Any], None]]]:
    class State:
        def __init__(self) -> None:
            self.lock = threading.RLock()
            state = self

            class Handler(logging.Handler):
                def emit(self, record: logging.LogRecord) -> None:
                    with state.lock:
                        pass

            self.log = logging.getLogger(f"bench-{id(self)}")
            self.log.propagate = False
            self.log.setLevel(logging.INFO)
            self.log.handlers = [Handler()]

    def app(s: State) -> None:
        with s.lock:
            s.log.info("x")

    return State, [lambda s: s.log.info("y"), app]


def _joined(s: _Pair) -> None:
    t = threading.Thread(target=_nest, args=(s.a, s.b))
    t.start()
    t.join()
    t = threading.Thread(target=_nest, args=(s.b, s.a))
    t.start()
    t.join()


def _gated(x: str, y: str) -> Callable[[_Pair], None]:
    def body(s: _Pair) -> None:
        with s.gate:
            _nest(getattr(s, x), getattr(s, y))
    return body


def _after_event(s: _Pair) -> None:
    s.done.wait()
    _nest(s.b, s.a)


def _then_set(s: _Pair) -> None:
    _nest(s.a, s.b)
    s.done.set()


def _philosopher(i: int) -> Callable[[_Pair], None]:
    return lambda s: _nest(s.forks[i], s.forks[(i + 1) % 5])


def _cases() -> dict[str, tuple[Callable[[], Any], list[Callable[[Any], None]]]]:
    def ring(i: int) -> Callable[[_Pair], None]:
        locks = ("a", "b", "c")
        return lambda s: [_nest(getattr(s, locks[i]), getattr(s, locks[(i + 1) % 3]))
                          for _ in range(2)] and None

    return {
        "ab_ba": (_Pair, [lambda s: _nest(s.a, s.b), lambda s: _nest(s.b, s.a)]),
        "ring3": (_Pair, [ring(0), ring(1), ring(2)]),
        "observer": _observer(),
        "logging_handler": _logging(),
        "philosophers": (_Pair, [_philosopher(i) for i in range(5)]),
        "rlock_nesting": (_Pair, [lambda s: _nest(s.r1, s.r2), lambda s: _nest(s.r2, s.r1)]),
        "gate": (_Pair, [_gated("a", "b"), _gated("b", "a")]),
        "joined": (_Pair, [_joined]),
        "event_ordered": (_Pair, [_after_event, _then_set]),
    }


def run_frontrun() -> None:
    import frontrun

    for name, (setup, workers) in _cases().items():
        start = time.monotonic()
        try:
            result = frontrun.explore(setup=setup, workers=workers, invariant=lambda s: True,
                                      total_timeout=120)
            deadlock = not result.property_holds and "eadlock" in (result.explanation or "")
            note = (result.explanation or "").splitlines()[0][:60] if result.explanation else ""
            explored = result.num_explored
        except Exception as exc:  # report, go on
            deadlock, note, explored = False, f"error: {type(exc).__name__}: {exc}"[:60], 0
        print(json.dumps({"tool": "frontrun", "program": name, "deadlock": deadlock,
                          "explored": explored, "wall_s": round(time.monotonic() - start, 2),
                          "note": note}), flush=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["lockwise"]:
        run_lockwise()
    elif sys.argv[1:] == ["frontrun"]:
        run_frontrun()
    else:
        sys.exit("usage: confirm_vs_frontrun.py lockwise | frontrun")
