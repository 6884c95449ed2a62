"""A cache and a log taken in opposite orders: it works today, by luck.

``lookup`` takes the cache lock, then the log lock; ``flush`` takes the log
lock, then the cache lock. The two threads run one after the other here (an
Event orders them), so the program never freezes, but the two orders together
can deadlock as soon as the calls overlap. ``lockwise run`` reports the
inversion with both stacks.
"""

import logging
import threading

logging.basicConfig(level=logging.INFO, format="%(threadName)s: %(message)s")
log = logging.getLogger("lock_order")

cache_lock = threading.Lock()
log_lock = threading.Lock()
cache = {}
lines = []


def lookup(key):
    with cache_lock:
        value = cache.setdefault(key, len(cache))
        with log_lock:
            lines.append(f"lookup {key} -> {value}")
    return value


def flush():
    with log_lock:
        with cache_lock:
            lines.append(f"flush ({len(cache)} cached)")
        pending, lines[:] = list(lines), []
    for line in pending:
        log.info("%s", line)


first_done = threading.Event()
flushed = threading.Event()


def reader():
    lookup("a")
    lookup("b")
    first_done.set()
    flushed.wait()


def flusher():
    first_done.wait()
    flush()
    flushed.set()


threads = [threading.Thread(target=reader, name="reader"),
           threading.Thread(target=flusher, name="flusher")]
for t in threads:
    t.start()
for t in threads:
    t.join()
