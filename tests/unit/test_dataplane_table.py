"""The controller's table of data-plane processes (control/dataplanes.py), fed reports as the
admin route hands them over: pure, a fake clock, no process started."""

from __future__ import annotations

import pytest

from gateway.control.dataplanes import DataPlanes, Process, controller_url, resolve_workers
from gateway.control.gather import Gather
from gateway.dataplane.observe import Observer
from gateway.dataplane.table import TableHolder
from gateway.metrics import Metrics


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def report(name: str, incarnation: str, pid: int, requests: int = 0) -> dict:
    return {"process": name, "incarnation": incarnation, "pid": pid, "snapshot": ["e", 3],
            "connections": 2, "requests": requests,
            "observations": Observer(Metrics(), TableHolder()).report()}


def test_local_processes_keep_their_slot_and_ignore_a_dead_lifes_last_words() -> None:
    clock = Clock()
    planes = DataPlanes(2, Gather(Metrics()), clock=clock)
    planes.processes["dp-0"] = Process("dp-0", pid=11, local=True)    # as start() makes it
    planes.report(report("dp-0", "a", 11, requests=5))
    assert planes.status()[0] | {"up_since": None} == {
        "name": "dp-0", "pid": 11, "incarnation": "a", "snapshot": ["e", 3], "connections": 2,
        "requests": 5, "restarts": 0, "up_since": None, "error": None, "share": [0, 1]}
    planes.processes["dp-0"].pid = 12        # restarted: a new pid
    planes.report(report("dp-0", "a", 11, requests=9))   # the old life's last report, late
    assert planes.status()[0]["requests"] == 5
    clock.now += 3600                        # a local process never goes stale: it is watched
    assert [p["name"] for p in planes.status()] == ["dp-0"]


def test_another_hosts_process_is_listed_counted_and_dropped_when_silent() -> None:
    clock = Clock()
    gather = Gather(Metrics())
    planes = DataPlanes(0, gather, clock=clock)
    planes.report(report("node-b", "a", 7))
    planes.report(report("node-b", "b", 8))       # it restarted over there
    (entry,) = planes.status()
    assert (entry["pid"], entry["incarnation"], entry["restarts"]) == (8, "b", 1)
    assert gather.processes == ["node-b"]
    clock.now += 10                               # no report for 10 s
    assert planes.status() == [] and gather.processes == []
    with pytest.raises(ValueError, match="observations"):
        planes.report({**report("node-c", "a", 9), "observations": {"counters": 5}})
    assert planes.status() == []                  # refused whole: not listed either


def test_every_process_that_sends_to_the_replicas_keeps_a_share_of_their_limits() -> None:
    clock = Clock()
    planes = DataPlanes(0, Gather(Metrics()), main=True, clock=clock)   # it serves too
    mine: list[tuple[int, int]] = []
    planes.on_reshare = mine.append
    assert planes.report(report("node-b", "a", 7)).share == (1, 2) and mine == [(0, 2)]
    planes.report(report("node-a", "a", 8))
    assert [(p["name"], p["share"]) for p in planes.status()] == [("node-b", [2, 3]),
                                                                  ("node-a", [1, 3])]
    assert mine[-1] == (0, 3)
    clock.now += 3
    planes.report(report("node-a", "a", 8))
    clock.now += 3                               # node-b silent for 6 s: its share goes back
    assert [(p["name"], p["share"]) for p in planes.status()] == [("node-a", [1, 2])]
    assert mine[-1] == (0, 2)
    # local children keep the index of their --share; other hosts come after them
    planes = DataPlanes(2, Gather(Metrics()), clock=clock)
    for i in range(2):
        planes.processes[f"dp-{i}"] = Process(f"dp-{i}", pid=11 + i, local=True, share=(i, 2))
    planes.report(report("node-z", "a", 9))
    assert [p["share"] for p in planes.status()] == [[0, 3], [1, 3], [2, 3]]


def test_workers_and_the_controller_url() -> None:
    assert resolve_workers(3) == 3
    assert 1 <= resolve_workers("auto") <= 16
    assert controller_url("127.0.0.1:8081", 9) == "http://127.0.0.1:9"
    assert controller_url("0.0.0.0:8081", 9) == "http://127.0.0.1:9"
    assert controller_url("[::]:8081", 9) == "http://[::1]:9"


def test_status_text_lists_the_processes() -> None:
    from gateway.admin.render import render_status

    doc = {"config": {"loaded_at": 1000.0}, "services": {}, "snapshot": ["e", 4],
           "dataplanes": [
               {"name": "dp-0", "pid": 11, "snapshot": ["e", 4], "connections": 3,
                "requests": 50, "restarts": 0, "error": None},
               {"name": "dp-1", "pid": 12, "snapshot": ["e", 3], "connections": 1,
                "requests": 40, "restarts": 1, "error": "snapshot e:4 not applied: boom",
                "share": [1, 2]}]}
    text = render_status(doc, now=1060.0)
    assert "DATA PLANE" in text
    row = next(line for line in text.splitlines() if line.startswith("dp-1"))
    assert row.split()[:6] == ["dp-1", "12", "3", "(controller:", "4)", "2/2"]
    assert row.endswith("snapshot e:4 not applied: boom")
    one = render_status({**doc, "dataplanes": [{"name": "main", "pid": 1}]}, now=1060.0)
    assert "DATA PLANE" not in one      # workers 1: the gateway itself, nothing to add


def test_workers_is_held_until_a_restart_and_bounded() -> None:
    from gateway.errors import ConfigError
    from gateway.spec import parse_spec
    from gateway.spec.diff import diff_specs, keep_restart_fields

    base = "services: {e: {route: /e, versions: {v1: {command: 'w {port}'}}}}\n"
    one, four = parse_spec(base), parse_spec("gateway: {workers: 4}\n" + base)
    assert one.gateway.workers == 1 and four.gateway.workers == 4
    assert diff_specs(one, four).needs_restart == ("gateway.workers",)
    assert keep_restart_fields(one, four).gateway.workers == 1     # the running count stays
    assert parse_spec("gateway: {workers: auto}\n" + base).gateway.workers == "auto"
    assert parse_spec("gateway: {workers: 0}\n" + base).gateway.workers == 0   # controller only
    for bad in ("-1", "65", "many"):
        with pytest.raises(ConfigError, match="gateway.workers"):
            parse_spec(f"gateway: {{workers: {bad}}}\n" + base)
