# ruff: noqa: SIM117  (nested with blocks are the point: one acquire per line)
"""An observer calling back under its lock: the subject notifies while holding
its lock, the observer's callback takes the view lock; a render thread holds the
view lock and reads the subject."""
import threading


class Subject:
    def __init__(self):
        self.lock = threading.RLock()
        self.observers = []
        self.value = 0

    def set(self, value):
        with self.lock:
            self.value = value
            for callback in self.observers:
                callback(value)   # calls back under the subject's lock

    def get(self):
        with self.lock:
            return self.value


class View:
    def __init__(self, subject):
        self.lock = threading.Lock()
        self.subject = subject
        self.shown = None
        subject.observers.append(self.changed)

    def changed(self, value):
        with self.lock:
            self.shown = value

    def render(self):
        with self.lock:
            return self.subject.get()


subject = Subject()
view = View(subject)
threads = [threading.Thread(target=subject.set, args=(1,), name="setter"),
           threading.Thread(target=view.render, name="renderer")]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("shown", view.shown)
