# ruff: noqa: SIM117  (nested with blocks are the point: one acquire per line)
"""Both orders under a common gate (a semaphore used as a mutex: lockwise's
order graph does not count it as a gate, so the inversion is reported)."""
import threading

gate = threading.BoundedSemaphore(1)
a = threading.Lock()
b = threading.Lock()


def one():
    with gate:
        with a:
            with b:
                pass


def two():
    with gate:
        with b:
            with a:
                pass


threads = [threading.Thread(target=one, name="one"), threading.Thread(target=two, name="two")]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("ok")
