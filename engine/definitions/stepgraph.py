"""Dependency graphs of workflow steps: reachability, cycles, topological order.

A graph is a mapping ``step -> the steps it depends on``; every dependency must be a
key. Iteration order of the mapping is the definition order, used to break ties.
Everything is iterative, so graph size is never bounded by Python's recursion limit.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Mapping, Sequence

Graph = Mapping[str, Sequence[str]]


def reverse(graph: Graph) -> dict[str, list[str]]:
    """``step -> the steps that depend on it``, in definition order."""
    result: dict[str, list[str]] = {node: [] for node in graph}
    for node, deps in graph.items():
        for dep in deps:
            result[dep].append(node)
    return result


def reachable(graph: Graph, start: str) -> set[str]:
    """Nodes reachable from ``start`` by one edge or more (``start`` only if on a cycle)."""
    seen: set[str] = set()
    queue = deque(graph[start])
    while queue:
        node = queue.popleft()
        if node not in seen:
            seen.add(node)
            queue.extend(graph[node])
    return seen


def find_cycles(graph: Graph) -> list[list[str]]:
    """One cycle per strongly connected component of two or more nodes.

    Each is the shortest cycle through the component's smallest node, written
    ``[a, b, ..., a]`` with ``a -> b`` meaning "a depends on b"; neighbours are tried
    in sorted order so the answer is deterministic. Self loops are not reported here.
    """
    cycles: list[list[str]] = []
    done: set[str] = set()
    for node in sorted(graph):
        if node in done:
            continue
        forward = reachable(graph, node)
        if node not in forward:
            continue
        # ``node`` is the smallest of its component: smaller members were seen first.
        component = {other for other in forward if node in reachable(graph, other)}
        done |= component
        cycles.append(_shortest_cycle(graph, node, component))
    return cycles


def _shortest_cycle(graph: Graph, start: str, component: set[str]) -> list[str]:
    parent: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt in sorted(graph[node]):
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [*reversed(path), start]
            if nxt in component and nxt not in parent:
                parent[nxt] = node
                queue.append(nxt)
    raise ValueError(f"{start!r} is not on a cycle")


def topological_order(graph: Graph) -> list[str]:
    """Dependencies before dependents; among ready steps, the earliest defined first."""
    names = list(graph)
    index = {name: position for position, name in enumerate(names)}
    waiting = {name: len(set(deps)) for name, deps in graph.items()}
    dependents = reverse(graph)
    ready = [index[name] for name, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        name = names[heapq.heappop(ready)]
        order.append(name)
        for dependent in dict.fromkeys(dependents[name]):
            waiting[dependent] -= 1
            if waiting[dependent] == 0:
                heapq.heappush(ready, index[dependent])
    if len(order) != len(names):
        raise ValueError("the graph has a cycle")
    return order
