# ruff: noqa: SIM117  (nested with blocks are the point: one acquire per line)
"""The second order is taken only after the first thread was joined."""
import threading

a = threading.Lock()
b = threading.Lock()


def one():
    with a:
        with b:
            pass


def two():
    with b:
        with a:
            pass


first = threading.Thread(target=one, name="one")
first.start()
first.join()
second = threading.Thread(target=two, name="two")
second.start()
second.join()
print("ok")
