"""Spreading a version's replicas over Swarm nodes (gateway/runtimes/swarm_spread.py).

What a user relies on: `spread=node.id` (or a label) puts a version's replicas on as many nodes
(or label values) as there are, even though each replica is its own Swarm service; nodes that
are down, drained, excluded by a constraint or short of GPUs are never chosen; what the gateway
cannot judge is left to Swarm rather than guessed.
"""

from __future__ import annotations

from typing import Any

from gateway.runtimes.base import ReplicaSpec
from gateway.runtimes.swarm_attrs import service_create
from gateway.runtimes.swarm_spread import Placed, choose, matches, pin_constraints
from gateway.spec.models import PlacementSpec

OWNER = ("llm", "v1")
BY_NODE = ("spread=node.id",)


def node(nid: str, *, zone: str | None = None, state: str = "ready", avail: str = "active",
         role: str = "worker", gpus: int = 0) -> dict[str, Any]:
    labels = {"zone": zone} if zone is not None else {}
    return {"ID": nid,
            "Spec": {"Role": role, "Availability": avail, "Labels": labels},
            "Status": {"State": state},
            "Description": {"Hostname": f"host-{nid}", "Platform": {"OS": "linux"},
                            "Resources": {"GenericResources": [
                                {"NamedResourceSpec": {"Kind": "NVIDIA-GPU", "Value": f"GPU-{i}"}}
                                for i in range(gpus)]}}}


def place(nodes: list[dict[str, Any]], count: int, prefs: tuple[str, ...] = BY_NODE,
          constraints: tuple[str, ...] = (), placed: list[Placed] | None = None,
          **kw: Any) -> list[dict[str, str]]:
    """Start ``count`` replicas one after the other, each counted (by its pins) for the next."""
    placed = list(placed or [])
    chosen = []
    for _ in range(count):
        pins = choose(nodes, placed, OWNER, prefs, constraints, **kw)
        placed.append(Placed(OWNER, None, pins))
        chosen.append(pins)
    return chosen


def test_replicas_started_together_land_one_per_node() -> None:
    nodes = [node("n0", role="manager"), node("n1"), node("n2")]
    chosen = place(nodes, 3)
    assert sorted(p["node.id"] for p in chosen) == ["n0", "n1", "n2"]
    # a fourth and fifth go where there is least of the version, never three on one node
    more = place(nodes, 5)
    counts = {n: sum(p["node.id"] == n for p in more) for n in ("n0", "n1", "n2")}
    assert max(counts.values()) - min(counts.values()) <= 1


def test_nodes_that_cannot_take_a_task_are_never_chosen() -> None:
    nodes = [node("down", state="down"), node("drained", avail="drain"),
             node("paused", avail="pause"), node("mgr", role="manager"), node("ok1"), node("ok2")]
    chosen = place(nodes, 4, constraints=("node.role!=manager",))
    assert {p["node.id"] for p in chosen} == {"ok1", "ok2"}


def test_gpus_go_only_to_nodes_that_advertise_enough() -> None:
    nodes = [node("cpu"), node("one", gpus=1), node("two", gpus=2)]
    assert {p["node.id"] for p in place(nodes, 3, gpus=2)} == {"two"}
    assert {p["node.id"] for p in place(nodes, 2, gpus=1)} == {"one", "two"}


def test_a_lost_node_s_replica_is_replaced_on_the_least_loaded_survivor() -> None:
    nodes = [node("n0"), node("n1", state="down"), node("n2")]
    placed = [Placed(OWNER, "n0"), Placed(OWNER, "n0"), Placed(OWNER, "n2"),
              Placed(("other", "v1"), "n2")]
    assert choose(nodes, placed, OWNER, BY_NODE, ()) == {"node.id": "n2"}


def test_ties_go_to_the_node_with_fewest_replicas_of_any_version() -> None:
    nodes = [node("n0"), node("n1")]
    placed = [Placed(("other", "v1"), "n0"), Placed(("other", "v2"), "n0")]
    assert choose(nodes, placed, OWNER, BY_NODE, ()) == {"node.id": "n1"}


def test_nested_preferences_spread_over_zones_then_nodes_within_a_zone() -> None:
    nodes = [node("a1", zone="a"), node("a2", zone="a"), node("b1", zone="b")]
    chosen = place(nodes, 4, prefs=("spread=node.labels.zone", "spread=node.id"))
    assert [p["node.labels.zone"] for p in chosen].count("a") == 2
    assert sorted(p["node.id"] for p in chosen if p["node.labels.zone"] == "a") == ["a1", "a2"]
    assert pin_constraints(chosen[0]) == (f"node.labels.zone=={chosen[0]['node.labels.zone']}",
                                          f"node.id=={chosen[0]['node.id']}")


def test_what_the_gateway_cannot_judge_is_left_to_swarm() -> None:
    # nodes without the label: an empty value is no constraint Swarm accepts, so no pin
    assert choose([node("n0"), node("n1")], [], OWNER, ("spread=node.labels.zone",), ()) == {}
    # a descriptor this module does not know: no pin either
    assert choose([node("n0")], [], OWNER, ("spread=node.ip",), ()) == {}
    # a constraint it cannot evaluate keeps the node a candidate; Swarm still applies it
    assert matches(node("n0"), "node.ip==10.0.0.0/8")
    assert choose([node("n0")], [], OWNER, BY_NODE, ("node.ip==10.0.0.0/8",)) == {"node.id": "n0"}
    # constraints compare without case, as Swarm's do
    assert matches(node("n0"), "node.hostname==HOST-N0")
    assert not matches(node("n0"), "node.labels.zone==a")
    # nothing to spread: no pins, no node list needed
    assert choose([], [], OWNER, (), ()) == {}


def test_pins_become_constraints_of_the_replica_s_service() -> None:
    spec = ReplicaSpec(service="llm", version="v1", revision="r", image="img:1",
                       placement=PlacementSpec(constraints=("node.role==worker",),
                                               preferences=BY_NODE))
    body = service_create(spec, "abc", instance="i", network="net",
                          default_placement=PlacementSpec(), gpu_kind="NVIDIA-GPU",
                          stop_grace=1.0, pins=pin_constraints({"node.id": "n2"}))
    assert body["task_template"]["Placement"]["Constraints"] == ["node.role==worker",
                                                                 "node.id==n2"]
