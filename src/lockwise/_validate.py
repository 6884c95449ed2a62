"""Validation of a loaded JSON report, before anything renders it.

A report may come from anywhere (another machine, an older or newer
lockwise, a hand edit, an attacker). :func:`check` walks the document along
a schema of the fields the renderers (``_report``, ``_html``) read, and
raises ``ValueError`` naming the first problem by its place, e.g.
``findings[2].details.threads[0].holds: expected a list, got a string``.
Fields the renderers do not read are not checked (a newer writer may add
some); fields they do read must have the right type, numbers must be finite,
and the keys a renderer indexes directly must be present.

Schema notation: a Python type (``str``, ``bool``); ``NUM`` (an int or
float, not a bool, finite); ``ANY``; ``Opt(spec)`` (``null`` allowed);
``[spec]`` (a list of spec); ``Obj(required={...}, optional={...})``;
``Lst(spec, min=1)``; ``Event`` (a timeline event ``[kind, start, stop]``).

Cost: linear in the parts of the document it visits; no recursion deeper
than the schema (the document's own depth is bounded by ``json.load``, which
raises RecursionError on very deep nesting: see ``_jsonreport``).
"""

from __future__ import annotations

import math

TYPE_CHECKING = False  # True for type checkers: typing is not imported at run time
if TYPE_CHECKING:
    from typing import Any, Optional


class _Spec:
    def check(self, value: Any, where: str) -> None:
        raise NotImplementedError


_NAMES = {str: "a string", bool: "true or false", dict: "an object", list: "a list",
          int: "an integer", float: "a number", type(None): "null"}


def _what(value: Any) -> str:
    return _NAMES.get(type(value), type(value).__name__)


def _fail(where: str, expected: str, value: Any) -> None:
    raise ValueError(f"{where}: expected {expected}, got {_what(value)}")


class _Any(_Spec):
    def check(self, value: Any, where: str) -> None:
        pass


class _Num(_Spec):
    def __init__(self, integer: bool = False) -> None:
        self.integer = integer

    def check(self, value: Any, where: str) -> None:
        kinds = (int,) if self.integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds):
            _fail(where, "an integer" if self.integer else "a number", value)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{where}: expected a finite number, got {value}")


class _Type(_Spec):
    def __init__(self, kind: type) -> None:
        self.kind = kind

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, self.kind):
            _fail(where, _NAMES.get(self.kind, self.kind.__name__), value)


class Opt(_Spec):
    def __init__(self, spec: Any) -> None:
        self.spec = _spec(spec)

    def check(self, value: Any, where: str) -> None:
        if value is not None:
            self.spec.check(value, where)


class Lst(_Spec):
    def __init__(self, item: Any, min: int = 0) -> None:
        self.item = _spec(item)
        self.min = min

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, list):
            _fail(where, "a list", value)
        if len(value) < self.min:
            raise ValueError(f"{where}: expected at least {self.min} item(s), got none")
        for i, item in enumerate(value):
            self.item.check(item, f"{where}[{i}]")


class Obj(_Spec):
    def __init__(self, required: Optional[dict[str, Any]] = None,
                 optional: Optional[dict[str, Any]] = None) -> None:
        self.required = {k: _spec(v) for k, v in (required or {}).items()}
        self.optional = {k: _spec(v) for k, v in (optional or {}).items()}

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            _fail(where, "an object", value)
        for key, spec in self.required.items():
            if key not in value:
                raise ValueError(f"{where}: missing {key!r}")
            spec.check(value[key], f"{where}.{key}")
        for key, spec in self.optional.items():
            if key in value:
                spec.check(value[key], f"{where}.{key}")


class _Event(_Spec):
    """A timeline event: ``[kind, start_ns, stop_ns]``."""

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, list) or len(value) != 3:
            raise ValueError(f"{where}: expected [kind, start, stop], got {_what(value)}")
        STR.check(value[0], f"{where}[0]")
        NUM.check(value[1], f"{where}[1]")
        NUM.check(value[2], f"{where}[2]")


def _spec(value: Any) -> _Spec:
    if isinstance(value, _Spec):
        return value
    if isinstance(value, list):
        return Lst(value[0])
    if isinstance(value, type):
        return _Type(value)
    raise TypeError(f"not a schema: {value!r}")


ANY = _Any()
NUM = _Num()
INT = _Num(integer=True)
STR = _Type(str)

LOCK = Obj(optional={"name": str, "site": str, "type": str})
NAMED_LOCK = Obj(required={"name": str}, optional={"site": str, "type": str})
FRAME = Obj(optional={"file": str, "line": INT, "function": str, "code": str})
STACK = Obj(optional={"thread": str, "title": str, "frames": [FRAME]})
WAIT = Obj(optional={"kind": Opt(str), "lock": Opt(LOCK), "held_by": Opt(str),
                     "thread": Opt(str), "task": Opt(str), "via": Opt(str)})
FORK_LINK = Obj(optional={"id": str, "parent_pid": INT, "lock": LOCK, "owner": str,
                          "acquired_at": str})
FORK_HAZARD = Obj(optional={"id": str, "parent_pid": INT, "lock": LOCK, "owner": str,
                            "acquired_at": str, "forking_thread": str,
                            "reset_in_child": bool, "fix": str})
DEADLOCK = Obj(optional={
    "rule": str, "victim": Opt(str), "fork_hazard": FORK_LINK,
    "threads": [Obj(required={"thread": str},
                    optional={"holds": [Obj(required={"lock": LOCK, "acquired_at": str},
                                            optional={"acquired_from": str})],
                              "waits_for": WAIT})],
})
LOCK_ORDER = Obj(optional={
    "cycle": Lst(Obj(required={"from": NAMED_LOCK, "to": NAMED_LOCK, "thread": str,
                               "first_stack": [FRAME], "second_stack": [FRAME]}), min=1),
})
HANG = Obj(optional={
    "table": [Obj(optional={"lock": Opt(LOCK), "owner": Opt(str), "waiters": [str]})],
})
DETAILS = {"deadlock": DEADLOCK, "lock-order": LOCK_ORDER, "hang": HANG,
           "fork-hazard": FORK_HAZARD}
FINDING = Obj(required={"kind": str}, optional={
    "summary": str, "threads": [str], "locks": [LOCK], "stacks": [STACK],
    "details": dict, "text": str, "time": NUM, "pid": INT,
    "confirmation": Obj(required={"status": str}, optional={"reason": str, "runs": NUM,
                                                            "schedule": dict}),
})
SITE = Obj(optional={"site": str, "function": str, "code": Opt(str), "count": NUM,
                     "wait_ns": Opt(NUM)})
PROFILE_LOCK = Obj(optional={
    "name": str, "site": str, "type": str,
    **{k: Opt(NUM) for k in ("acquisitions", "contentions", "wait_total_ns", "wait_max_ns",
                             "wait_mean_ns", "wait_p99_ns", "hold_total_ns", "hold_max_ns",
                             "hold_mean_ns", "handoffs", "sampled", "unfinished")},
    "waiters": [SITE], "holders": [SITE],
})
TIMELINE = Obj(optional={"locks": [Obj(optional={
    "name": str, "site": str,
    "threads": [Obj(optional={"thread": str, "events": [_Event()]})],
})]})
PROFILE = Obj(optional={"locks": [PROFILE_LOCK], "sample": Opt(NUM), "duration_ns": Opt(NUM),
                        "timeline": Opt(TIMELINE), "collapsed": [str]})
NODE = Obj(optional={"name": str, "site": str})
ORDER_GRAPH = Obj(optional={"nodes": [ANY], "edges": [Obj(optional={
    "from_name": Opt(str), "to_name": Opt(str)})]})
WATCHED = Obj(optional={"sites": INT, "since": str, "fork_audit": bool,
                        "predating": Obj(optional={"locks": INT, "modules": dict})})
DOCUMENT = Obj(required={"findings": [FINDING]}, optional={
    "format": INT, "profile": PROFILE, "order_graph": ORDER_GRAPH, "notes": [str],
    "watched": WATCHED,
})


def check(data: Any) -> None:
    """Raise ValueError naming the first problem of a report document."""
    DOCUMENT.check(data, "report")
    for i, finding in enumerate(data["findings"]):
        spec = DETAILS.get(finding["kind"])
        if spec is not None and "details" in finding:
            spec.check(finding["details"], f"findings[{i}].details")
    nodes = data.get("order_graph", {}).get("nodes", [])
    for i, node in enumerate(nodes):
        if not isinstance(node, str):
            NODE.check(node, f"order_graph.nodes[{i}]")
