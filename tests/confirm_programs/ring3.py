# ruff: noqa: SIM117  (nested with blocks are the point: one acquire per line)
"""A ring of three: each worker nests two of three locks, a -> b -> c -> a."""
import threading

a = threading.Lock()
b = threading.Lock()
c = threading.Lock()


def worker(first, second):
    for _ in range(2):
        with first:
            with second:
                pass


pairs = [(a, b), (b, c), (c, a)]
threads = [threading.Thread(target=worker, args=(x, y), name=f"w{i}")
           for i, (x, y) in enumerate(pairs)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("done")
