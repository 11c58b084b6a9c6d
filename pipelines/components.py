"""Connected components in rounds of grouping, for Beam: Hash-to-Min (Rastogi et al., "Finding Connected
Components in Map-Reduce in Logarithmic Rounds", ICDE 2013).

Every node ``v`` holds a cluster ``C(v)``, at first ``v`` and its neighbours. In a round each node sends
``C(v)`` to the smallest node of ``C(v)`` and that smallest node to every other member; a node's new
cluster is the union of what it received. At the fixed point the smallest node of each component holds
the whole component and every other member holds only the smallest node; the paper shows it gets there
in O(log n) rounds on paths and conjectures 2 log(diameter) in general. Nothing ever holds more than
one component (a cluster is a subset of its component), so memory is bounded by the largest component,
not by the number of nodes or edges.

Nodes are any hashable, totally ordered values, and route the messages themselves: keep them small (clean
uses ints), every message and every cluster is made of them. Pure functions: the Beam shell is
``pipelines.stages.clean_pipeline``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

Cluster = tuple  # sorted, distinct nodes


def edge_messages(u: Any, v: Any) -> Iterator[tuple[Any, tuple[bool, Cluster]]]:
    """An undirected edge as messages building the first clusters (``ClusterUnion``): each end holds itself
    and the other. ``u == v`` puts a node without edges in the graph."""
    yield u, (False, (u, v))
    yield v, (False, (u, v))


def round_messages(node: Any, cluster: Cluster) -> Iterator[tuple[Any, tuple[bool, Cluster]]]:
    """One Hash-to-Min round from ``node``: ``(to, (is_own_old_cluster, nodes))``. The node's own old
    cluster goes back to itself too, so the round can tell whether anything changed."""
    smallest = cluster[0]
    yield node, (True, cluster)
    yield smallest, (False, cluster)
    for other in cluster[1:]:
        yield other, (False, (smallest,))


class ClusterUnion:
    """A node's new cluster, as a combiner (Beam ``CombineFn`` methods, no Beam import): the union of the
    clusters sent to it, and its old cluster when it had one. The accumulator never holds more nodes
    than the component, however many messages arrive."""

    def create_accumulator(self) -> tuple[Cluster | None, set]:
        return None, set()

    def add_input(self, accumulator, message: tuple[bool, Cluster]):
        old, new = accumulator
        is_old, nodes = message
        if is_old:
            return nodes, new
        new.update(nodes)
        return old, new

    def merge_accumulators(self, accumulators: Iterable):
        old, new = None, set()
        for other_old, other_new in accumulators:
            old = other_old if other_old is not None else old
            new |= other_new
        return old, new

    def extract_output(self, accumulator) -> tuple[Cluster, bool]:
        """``(new cluster, changed)``; an empty cluster means the node received nothing (it drops out)."""
        old, new = accumulator
        cluster = tuple(sorted(new))
        return cluster, cluster != old


def is_component(node: Any, cluster: Cluster) -> bool:
    """At the fixed point: ``node`` is the smallest of its component, and ``cluster`` is the component."""
    return cluster[0] == node
