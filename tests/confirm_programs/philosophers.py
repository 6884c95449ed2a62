# ruff: noqa: SIM117  (nested with blocks are the point: one acquire per line)
"""Dining philosophers: each takes the left fork, then the right one."""
import threading

N = 5
forks = [threading.Lock() for _ in range(N)]


def philosopher(i):
    left, right = forks[i], forks[(i + 1) % N]
    with left:
        with right:
            pass


threads = [threading.Thread(target=philosopher, args=(i,), name=f"philosopher-{i}")
           for i in range(N)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("dinner over")
