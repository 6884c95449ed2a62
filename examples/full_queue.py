"""A producer that holds a lock while it puts into a full queue.

The consumer needs that lock before it takes a job, so the queue never
drains: the producer waits for room, the consumer keeps retrying the lock.
The consumer retries with a timeout (as a careful service would), so this is
not a certain deadlock, and under plain ``python`` the program just hangs.
``lockwise run --hang-timeout 1 examples/full_queue.py`` reports the hang,
with every thread's stack and the table of who holds what, after one second;
the optional argument is how long the main thread waits before giving up
(default 3 seconds, so that the example ends).
"""

import queue
import sys
import threading

jobs = queue.Queue(maxsize=2)
stats_lock = threading.Lock()
holding = threading.Event()
stop = threading.Event()
taken = []


def producer():
    for n in range(5):
        with stats_lock:
            holding.set()
            jobs.put(n)  # blocks while the queue is full, still holding stats_lock


def consumer():
    while not stop.is_set():
        if stats_lock.acquire(timeout=0.05):
            try:
                taken.append(jobs.get_nowait())
            except queue.Empty:
                pass
            finally:
                stats_lock.release()


jobs.put("warm-up 1")
jobs.put("warm-up 2")  # the queue is full before the producer starts
workers = [threading.Thread(target=producer, name="producer", daemon=True),
           threading.Thread(target=consumer, name="consumer", daemon=True)]
workers[0].start()
holding.wait()
workers[1].start()
workers[0].join(timeout=float(sys.argv[1]) if len(sys.argv) > 1 else 3.0)
stop.set()
workers[1].join()
print(f"took {len(taken)} jobs; the producer is {'stuck' if workers[0].is_alive() else 'done'}")
