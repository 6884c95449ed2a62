"""lockwise's checks must not keep a blocked thread's objects alive.

``_scan`` (the "every thread is blocked" rule) reads ``sys._current_frames()``,
which includes the scanning frame itself; a local referring to it was a
reference cycle holding the whole blocked stack (a joined Thread, an executor's
queues and their multiprocessing semaphores) until the next garbage collection.
CPython's suites saw it as "dangling threads" (3.9: test_logging env changed)
and as leaked semaphores (test_concurrent_futures.test_init
FailingInitializerResourcesTest on 3.13).
"""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

from lockwise import _waitfor


class Payload:
    pass


@pytest.fixture
def no_gc() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def test_scan_leaves_no_reference_cycle(no_gc: None) -> None:
    refs: list[Any] = []

    def body() -> None:
        payload = Payload()
        refs.append(weakref.ref(payload))
        _waitfor._scan()  # this new thread's own entry is scanned first

    thread = threading.Thread(target=body)
    thread.start()
    thread.join(5)
    assert refs[0]() is None

