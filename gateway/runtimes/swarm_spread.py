"""Spread preferences over a version's replicas, which Swarm cannot do for us here.

Swarm's ``spread=`` preference balances the tasks of ONE service. The swarm runtime makes one
service per replica (swarm_attrs), so Swarm would see one task each time and place every
replica by the nodes' total task count alone: two replicas of a version on one node and none on
another, often. So the runtime spreads them itself, the way Swarm nests its preferences: for
each spread descriptor in turn, among the nodes that can take the replica, the value with the
fewest live replicas of the version wins (ties: the fewest replicas of the whole gateway, then
the smallest value), and the replica's service is pinned to that value with one more
constraint (``node.labels.zone==b``). Pinning costs no rescheduling: a replica's task is never
restarted by Swarm (restart condition none); the gateway replaces it, spreading again.

What the gateway cannot judge it leaves to Swarm: a constraint it does not know (``node.ip``)
keeps a node a candidate, a descriptor it does not know ends the pinning, and a node that lacks
a label is never pinned to (an empty value is no constraint Swarm accepts). A pinned replica
that no node takes is started again without the pins (swarm.py), so a wrong guess costs time,
never a replica.

Pure: nodes are the Swarm API's node documents, the placed replicas plain records.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Placed:
    """A live replica as far as spreading is concerned: whose it is, its node once known, and
    the values it was pinned to (what counts until its node is known)."""

    owner: tuple[str, str]                     # (service, version)
    node_id: str | None = None
    pins: dict[str, str] = field(default_factory=dict)


def descriptors(preferences: tuple[str, ...]) -> list[str]:
    """'spread=node.labels.zone' -> 'node.labels.zone' (the schema allows only spread=)."""
    return [p.partition("=")[2] for p in preferences]


def node_value(node: dict[str, Any], key: str) -> str | None:
    """The node's value for a constraint key or spread descriptor (None: a key this module does
    not know). A missing label reads as "", as Swarm groups such nodes."""
    desc = node.get("Description") or {}
    spec = node.get("Spec") or {}
    low = key.lower()
    if low == "node.id":
        return str(node.get("ID") or "")
    if low == "node.hostname":
        return str(desc.get("Hostname") or "")
    if low == "node.role":
        return str(spec.get("Role") or "")
    if low in ("node.platform.os", "node.platform.arch"):
        return str((desc.get("Platform") or {}).get("OS" if low.endswith("os") else
                                                      "Architecture") or "")
    if low.startswith("node.labels.") and len(key) > len("node.labels."):
        return str((spec.get("Labels") or {}).get(key[len("node.labels."):], ""))
    if low.startswith("engine.labels.") and len(key) > len("engine.labels."):
        labels = (desc.get("Engine") or {}).get("Labels") or {}
        return str(labels.get(key[len("engine.labels."):], ""))
    return None


def matches(node: dict[str, Any], constraint: str) -> bool:
    """Whether the node may satisfy a Swarm constraint (``key==value`` / ``key!=value``,
    compared without case, as Swarm does). What cannot be judged here counts as satisfied:
    Swarm still applies the constraint itself."""
    for op in ("!=", "=="):
        key, sep, want = constraint.partition(op)
        if sep:
            have = node_value(node, key.strip())
            if have is None:
                return True
            same = have.casefold() == want.strip().casefold()
            return same if op == "==" else not same
    return True


def usable(node: dict[str, Any]) -> bool:
    """Ready and active: a node Swarm would give a new task to."""
    return (str((node.get("Status") or {}).get("State")) == "ready"
            and str((node.get("Spec") or {}).get("Availability")) == "active")


def advertised(node: dict[str, Any], kind: str) -> int:
    """How many units of the generic resource ``kind`` the node advertises (named, one per
    device id, or discrete)."""
    found = 0
    resources = ((node.get("Description") or {}).get("Resources") or {})
    for res in resources.get("GenericResources") or []:
        named = res.get("NamedResourceSpec") or {}
        discrete = res.get("DiscreteResourceSpec") or {}
        if named.get("Kind") == kind:
            found += 1
        elif discrete.get("Kind") == kind:
            found += int(discrete.get("Value") or 0)
    return found


def choose(nodes: list[dict[str, Any]], placed: list[Placed], owner: tuple[str, str],
           preferences: tuple[str, ...], constraints: tuple[str, ...],
           gpus: int = 0, gpu_kind: str = "NVIDIA-GPU") -> dict[str, str]:
    """The pins for a new replica of ``owner``: descriptor -> value, in the preferences' order
    ({} when there is nothing to spread, or nothing the gateway can judge)."""
    wanted = descriptors(preferences)
    if not wanted:
        return {}
    by_id = {str(n.get("ID")): n for n in nodes}
    candidates = [n for n in nodes if usable(n) and all(matches(n, c) for c in constraints)
                  and (gpus <= 0 or advertised(n, gpu_kind) >= gpus)]

    def value_of(p: Placed, key: str) -> str | None:
        node = by_id.get(p.node_id or "")
        return node_value(node, key) if node is not None else p.pins.get(key)

    pins: dict[str, str] = {}
    for key in wanted:
        values = {node_value(n, key) for n in candidates}
        if not values or None in values:
            break
        # only replicas inside the values already chosen compete (Swarm's nesting)
        inside = [p for p in placed if all(value_of(p, k) == v for k, v in pins.items())]
        mine = Counter(value_of(p, key) for p in inside if p.owner == owner)
        everyone = Counter(value_of(p, key) for p in inside)
        best = min(sorted(v for v in values if v is not None),
                   key=lambda v: (mine[v], everyone[v], v == ""))
        if not best:
            break
        pins[key] = best
        candidates = [n for n in candidates if node_value(n, key) == best]
    return pins


def pin_constraints(pins: dict[str, str]) -> tuple[str, ...]:
    return tuple(f"{key}=={value}" for key, value in pins.items())
