from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from typing import Any, Callable

import pytest

import lockwise
from lockwise import _config

pytest_plugins = ["pytester"]

# The Ctrl-C tests need SIGINT to raise KeyboardInterrupt, here and in the
# programs they start. A shell runs background jobs (`bash .ci/run &` in a
# script) with SIGINT ignored, and Python keeps an ignored SIGINT ignored:
# restore the default, which the child processes inherit as well.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def clean_lockwise() -> Iterator[None]:
    """Every test starts with no findings, an empty order graph and default settings."""
    lockwise.reset()
    saved = dict(vars(_config.settings))
    yield
    # Logging, listeners and policy callables run in lockwise's reporter
    # thread: let this test's reports reach them before the next test.
    lockwise.flush(2)
    vars(_config.settings).update(saved)
    lockwise.reset()


class Runner:
    """Start threads, join them with a timeout, keep their results and exceptions."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []
        self.errors: dict[str, BaseException] = {}
        self.results: dict[str, Any] = {}

    def start(self, target: Callable[[], Any], name: str) -> threading.Thread:
        def body() -> None:
            try:
                self.results[name] = target()
            except BaseException as exc:  # recorded for the test to inspect
                self.errors[name] = exc

        thread = threading.Thread(target=body, name=name, daemon=True)
        self.threads.append(thread)
        thread.start()
        return thread

    def join(self, timeout: float = 10.0, untimed: bool = False) -> None:
        """Join every thread. ``untimed`` joins without a timeout, so the main
        thread counts as blocked for the "nobody left to run" rule (a timed
        join can return and act); pytest-timeout still bounds the test."""
        for thread in self.threads:
            if untimed:
                thread.join()
            else:
                thread.join(timeout)
        stuck = [t.name for t in self.threads if t.is_alive()]
        assert not stuck, f"threads still running after {timeout}s: {stuck}"


@pytest.fixture
def runner() -> Runner:
    return Runner()


@pytest.fixture
def mp_shared(tmp_path: Any, monkeypatch: Any) -> Any:
    """lockwise installed, with a private shared store for this test, in this
    process and its children."""
    directory = str(tmp_path / "store")
    monkeypatch.setenv("LOCKWISE_SHARED_DIR", directory)
    monkeypatch.delenv("LOCKWISE_MULTIPROCESSING", raising=False)  # on by default
    old = lockwise.configure(shared_dir=directory)
    lockwise.install()
    try:
        yield directory
    finally:
        lockwise.uninstall()
        lockwise.configure(**old)
