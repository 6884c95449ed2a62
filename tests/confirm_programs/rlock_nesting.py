# ruff: noqa: SIM117  (nested with blocks are the point: one acquire per line)
"""An RLock nesting inversion: a re-entrant cache lock taken (re-entered)
around a store lock in one thread, the store lock around the cache in another."""
import threading

cache_lock = threading.RLock()
store_lock = threading.RLock()


def refresh():
    with cache_lock:
        with cache_lock:          # re-entered: no new order
            with store_lock:
                pass


def save():
    with store_lock:
        with store_lock:
            with cache_lock:
                pass


threads = [threading.Thread(target=refresh, name="refresher"),
           threading.Thread(target=save, name="saver")]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("ok")
