"""N threads blocked on one Event for HOLD seconds, then set (bench_scale)."""

import os
import threading
import time

N = int(os.environ.get("BENCH_THREADS", "1000"))
HOLD = float(os.environ.get("BENCH_HOLD", "1.0"))

event = threading.Event()
threads = [threading.Thread(target=event.wait) for _ in range(N)]
for thread in threads:
    thread.start()
time.sleep(HOLD)
event.set()
for thread in threads:
    thread.join()
