# ruff: noqa: SIM117  (nested with blocks are the point: one acquire per line)
"""A logging handler that takes an application lock (an RLock: the application
logs while holding it, and the handler re-enters it), while another thread logs."""
import logging
import threading

state_lock = threading.RLock()
state = {"n": 0}


class StateHandler(logging.Handler):
    def emit(self, record):
        with state_lock:          # the handler's lock is held here (Handler.handle)
            state["n"] += 1


log = logging.getLogger("app")
log.setLevel(logging.INFO)
log.propagate = False
log.addHandler(StateHandler())


def app():
    with state_lock:
        log.info("updating")      # takes the handler's lock while holding state_lock


def other():
    log.info("hello")             # handler lock, then state_lock


threads = [threading.Thread(target=other, name="logger"),
           threading.Thread(target=app, name="app")]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("n", state["n"])
