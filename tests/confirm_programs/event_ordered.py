# ruff: noqa: SIM117  (nested with blocks are the point: one acquire per line)
"""Both threads run together, but the second order waits for an Event set
after the first order is done."""
import threading

a = threading.Lock()
b = threading.Lock()
done = threading.Event()


def one():
    with a:
        with b:
            pass
    done.set()


def two():
    done.wait()
    with b:
        with a:
            pass


threads = [threading.Thread(target=two, name="two"), threading.Thread(target=one, name="one")]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("ok")
