"""The lock-order graph: a directed graph of lock classes with gated edges.

Algorithm. Nodes are lock classes (or lock instances, for locks of one
creation site); an edge a -> b means "b was acquired while a was held". Each
edge carries ``gates``: the nodes that were held on *every* occasion the edge
was taken (the intersection over occasions). A cycle is a potential deadlock
unless one gate is common to all its edges (then the gate serialises them).

When an edge a -> b is added (or its gates shrink), ``find_cycle`` looks for
the shortest simple path b ~> a such that the edges of the cycle share no
gate. A new edge taken with no other lock held (no gates: the common case)
needs a plain breadth-first search, O(V + E). A gated edge needs the gates
of the whole path, so simple paths are searched by iterative deepening,
shortest first, within ``SEARCH_BUDGET`` edge expansions.

Cost: nothing per known edge (the caller caches validated lock chains);
O(V + E) per new ungated edge; at most ``SEARCH_BUDGET`` steps per new gated
edge. Edges are never searched on the hot path.

Limits: past the budget a gated cycle is not reported (a possible miss, never
a false alarm); a node's removal drops its edges.
"""

from __future__ import annotations

TYPE_CHECKING = False  # True for type checkers: typing is not imported at run time
if TYPE_CHECKING:
    from collections import deque
    from typing import Any, Generic, Hashable, Optional, TypeVar

    N = TypeVar("N", bound=Hashable)
else:
    from _collections import deque  # as threading does: collections costs start-up

    class Generic:
        """``Generic[N]`` at run time, without importing typing: a plain base."""

        def __class_getitem__(cls, item: object) -> type:
            return cls

    N = None

SEARCH_BUDGET = 100_000


class Edge:
    """Data of one edge: gates, first occurrence (stacks, thread), threads seen."""

    __slots__ = ("gates", "info", "threads", "declared")

    def __init__(self, gates: frozenset[Any], info: Any, thread: int) -> None:
        self.gates = gates
        self.info = info
        self.threads = {thread}
        #: Declared intended (declare_order): never part of a reported cycle.
        self.declared = False


class OrderGraph(Generic[N]):
    """A directed graph with :class:`Edge` data and gated cycle search."""

    def __init__(self) -> None:
        self.out: dict[N, dict[N, Edge]] = {}
        self.into: dict[N, set[N]] = {}

    def __len__(self) -> int:
        return len(self.out)

    def edge(self, a: N, b: N) -> Optional[Edge]:
        targets = self.out.get(a)
        return None if targets is None else targets.get(b)

    def add(self, a: N, b: N, edge: Edge) -> None:
        self.out.setdefault(a, {})[b] = edge
        self.out.setdefault(b, {})
        self.into.setdefault(b, set()).add(a)
        self.into.setdefault(a, set())

    def remove_node(self, node: N) -> None:
        for b in self.out.pop(node, {}):
            self.into.get(b, set()).discard(node)
        for a in self.into.pop(node, set()):
            self.out.get(a, {}).pop(node, None)

    def edges(self) -> list[tuple[N, N, Edge]]:
        return [(a, b, e) for a, targets in self.out.items() for b, e in targets.items()]

    def find_cycle(self, a: N, b: N, skip: Any = None) -> Optional[list[N]]:
        """Shortest simple cycle a -> b ~> a not guarded by one common gate.

        Returns the nodes [a, b, ..., z] (z -> a closes it), or None. Nodes for
        which ``skip(node)`` is true, and declared edges, are not traversed.
        """
        first = self.edge(a, b)
        if first is None or first.declared:
            return None

        def usable(node: N, edge: Edge) -> bool:
            return not edge.declared and (skip is None or node == a or not skip(node))

        if not first.gates:
            return self._shortest_path(b, a, usable)
        return self._shortest_unguarded(a, b, first.gates, usable)

    def _shortest_path(self, start: N, goal: N, usable: Any) -> Optional[list[N]]:
        """Breadth-first shortest path start ~> goal, as [goal, start, ..., last]."""
        parent: dict[N, Optional[N]] = {start: None}
        queue = deque([start])
        while queue:
            node = queue.popleft()
            for nxt, edge in self.out.get(node, {}).items():
                if nxt in parent or not usable(nxt, edge):
                    continue
                parent[nxt] = node
                if nxt == goal:
                    path: list[N] = []
                    cur: Optional[N] = node
                    while cur is not None:
                        path.append(cur)
                        cur = parent[cur]
                    path.reverse()
                    return [goal] + path
                queue.append(nxt)
        return None

    def _shortest_unguarded(self, a: N, b: N, gates: frozenset[Any],
                            usable: Any) -> Optional[list[N]]:
        """Iterative deepening over simple paths b ~> a whose edges, with a -> b,
        share no gate. Bounded by ``SEARCH_BUDGET`` expansions: past it the
        cycle is not reported (never a false alarm, possibly a miss)."""
        budget = [SEARCH_BUDGET]
        reachable = self._reachable(b, usable)
        if a not in reachable:
            return None
        for depth in range(1, len(reachable) + 1):
            path = [a, b]
            found = self._deepen(a, path, {a, b}, gates, depth, usable, budget)
            if found is not None:
                return found
            if budget[0] <= 0:
                return None
        return None

    def _reachable(self, start: N, usable: Any) -> set[N]:
        seen = {start}
        queue = deque([start])
        while queue:
            node = queue.popleft()
            for nxt, edge in self.out.get(node, {}).items():
                if nxt not in seen and usable(nxt, edge):
                    seen.add(nxt)
                    queue.append(nxt)
        return seen

    def _deepen(self, a: N, path: list[N], on_path: set[N], common: frozenset[Any],
                depth: int, usable: Any, budget: list[int]) -> Optional[list[N]]:
        node = path[-1]
        for nxt, edge in self.out.get(node, {}).items():
            budget[0] -= 1
            if budget[0] <= 0:
                return None
            if not usable(nxt, edge):
                continue
            still = common & edge.gates
            if nxt == a:
                if not still:
                    return list(path)
                continue
            if nxt in on_path or depth <= 1:
                continue
            path.append(nxt)
            on_path.add(nxt)
            found = self._deepen(a, path, on_path, still, depth - 1, usable, budget)
            path.pop()
            on_path.discard(nxt)
            if found is not None:
                return found
        return None
