"""The lock-order graph: a directed graph of lock classes with gated edges.

Algorithm. Nodes are lock classes (or lock instances, for locks of one
creation site); an edge a -> b means "b was acquired while a was held". Each
edge carries ``gates``: the nodes that were held on *every* occasion the edge
was taken (the intersection over occasions). A cycle is a potential deadlock
unless one gate is common to all its edges (then the gate serialises them).

When an edge a -> b is added (or its gates shrink), ``find_cycle`` looks for
the shortest path b ~> a such that, for every gate g of the new edge, some
edge on the path was taken without g. It is a breadth-first search over
states (node, set of gates already escaped): with k gates on the new edge
there are at most 2**k states per node. k is the nesting depth minus one,
so in practice 1 to 4 states per node.

Cost: O(2**k * (V + E)) per new edge, nothing per known edge (the caller
caches validated lock chains). Edges are never searched on the hot path.

Limits: ``k`` is capped at ``MAX_GATES`` (the extra gates are ignored, which
can only add reports, never hide one); a node's removal drops its edges.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Generic, Hashable, Optional, TypeVar

MAX_GATES = 6

N = TypeVar("N", bound=Hashable)


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
        """Shortest cycle a -> b ~> a not guarded by one common gate.

        Returns the nodes [a, b, ..., z] (z -> a closes it), or None. Nodes for
        which ``skip(node)`` is true, and declared edges, are not traversed.
        """
        first = self.edge(a, b)
        if first is None or first.declared:
            return None
        gates = list(first.gates)[:MAX_GATES]
        full = (1 << len(gates)) - 1

        def escaped(edge: Edge) -> int:
            mask = 0
            for i, gate in enumerate(gates):
                if gate not in edge.gates:
                    mask |= 1 << i
            return mask

        start = (b, 0)
        parent: dict[tuple[N, int], Optional[tuple[N, int]]] = {start: None}
        queue = deque([start])
        while queue:
            node, mask = queue.popleft()
            for nxt, edge in self.out.get(node, {}).items():
                if edge.declared or (skip is not None and nxt is not a and skip(nxt)):
                    continue
                state = (nxt, mask | escaped(edge))
                if state in parent:
                    continue
                parent[state] = (node, mask)
                if nxt == a and state[1] == full:
                    path: list[N] = []
                    cur: Optional[tuple[N, int]] = (node, mask)
                    while cur is not None:
                        path.append(cur[0])
                        cur = parent[cur]
                    path.reverse()  # b ... node
                    return [a] + path
                if nxt != a:
                    queue.append(state)
        return None
