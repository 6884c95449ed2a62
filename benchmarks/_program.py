"""The workload of bench_program: a thread pool, a queue and logging from threads."""

from __future__ import annotations

import concurrent.futures
import logging
import os
import queue
import threading

ITEMS = int(os.environ.get("BENCH_PROGRAM_ITEMS", "20000"))


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(threadName)s %(message)s",
                        handlers=[logging.NullHandler()])
    log = logging.getLogger("bench")
    results: queue.Queue[int] = queue.Queue(maxsize=100)
    total = [0]
    lock = threading.Lock()

    def collector() -> None:
        for _ in range(ITEMS):
            value = results.get()
            with lock:
                total[0] += value

    def task(i: int) -> None:
        if i % 10 == 0:
            log.info("task %d", i)
        results.put(i * i % 7)

    t = threading.Thread(target=collector)
    t.start()
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        for i in range(ITEMS):
            pool.submit(task, i)
    t.join(120)
    print(total[0])


if __name__ == "__main__":
    main()
