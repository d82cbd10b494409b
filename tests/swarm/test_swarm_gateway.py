"""The whole gateway on the swarm runtime, running in a container on the overlay (as deployed),
against a real single-node swarm: the quickstart as Swarm services, a killed task under load,
scale-out and scale-in under load, a canary rolled back by analysis, and a controller restart
that adopts the services and resumes the rollout. Swarm is checked through the `docker` CLI."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.docker.cli import WORKER_IMAGE, adocker, docker_cli
from tests.helpers import REPO_ROOT, Load, metric_value, run_cli, wait_until
from tests.swarm.conftest import labelled_services
from tests.swarm.gwcontainer import GatewayContainer

pytestmark = [pytest.mark.swarm, pytest.mark.slow, pytest.mark.timeout(300)]

SWARM_EXAMPLE = REPO_ROOT / "config" / "swarm.yaml"     # the quickstart's models on Swarm


def echo(replicas: int = 1, **version: Any) -> dict[str, Any]:
    return {"route": "/v1/echo", "rewrite": "/predict",
            "versions": {"v1": {"image": WORKER_IMAGE, "port": 8000, "replicas": replicas,
                                **version}}}


def versions(doc: dict[str, Any], service: str = "echo") -> dict[str, Any]:
    v: dict[str, Any] = doc["services"][service]["versions"]
    return v


def service_spec(ref: str) -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(docker_cli("service", "inspect", ref))[0]["Spec"]
    return spec


def service_versions(instance: str, among: tuple[str, ...] = ("v1", "v2")) -> set[str]:
    """Which of ``among`` the instance's services run (listings only: no race with a removal,
    as an inspect of a service listed a moment before would have)."""
    return {v for v in among if docker_cli(
        "service", "ls", "-q", "--filter", f"label=serve-gateway.instance={instance}",
        "--filter", f"label=serve-gateway.version={v}")}


def task_container(replica_id: str, service: str = "echo", version: str = "v1") -> str:
    (task,) = json.loads(docker_cli("inspect", docker_cli(
        "service", "ps", "-q", f"sgw-{service}-{version}-{replica_id}")))
    return str(task["Status"]["ContainerStatus"]["ContainerID"])


async def test_quickstart_services_run_as_swarm_services(tmp_path: Path, instance: str,
                                                         network: str) -> None:
    """config/swarm.yaml (the quickstart's models) as shipped: only ports, state, instance and
    network changed."""
    config = yaml.safe_load(SWARM_EXAMPLE.read_text())
    gw = GatewayContainer(tmp_path, config["services"], instance, network,
                          swarm={**config["gateway"]["swarm"], "network": network})
    async with gw, aiohttp.ClientSession() as s:
        async with s.post(gw.url("/v1/echo"), json={"instances": [{"x": 1}]}) as r:
            assert r.status == 200 and (await r.json())["predictions"] == [{"x": 1}]
        async with s.post(gw.url("/v1/mlp"), json={"instances": [[0.1] * 512]}) as r:
            assert r.status == 200, await r.text()
            assert [len(p) for p in (await r.json())["predictions"]] == [16]
        doc = await gw.status()
        assert doc["runtime"] == "swarm"
        host = docker_cli("info", "--format", "{{.Name}}")
        subnet = json.loads(docker_cli("network", "inspect", network))[0]["IPAM"]["Config"][0]
        prefix = subnet["Subnet"].rsplit(".", 1)[0] + "."
        for name in ("echo", "mlp"):
            (group,) = versions(doc, name).values()
            assert group["ready"] == 2
            for rep in group["replicas"]:
                # each replica is its own service, reached at its task's overlay address
                assert rep["node"] == host and rep["address"].startswith(prefix), rep
                spec = service_spec(f"sgw-{name}-v1-{rep['id']}")
                assert spec["Labels"]["serve-gateway.revision"] == group["revision"]
                assert spec["EndpointSpec"]["Mode"] == "dnsrr"
        mlp = service_spec(f"sgw-mlp-v1-{versions(doc, 'mlp')['v1']['replicas'][0]['id']}")
        assert mlp["TaskTemplate"]["Resources"]["Limits"] == {"NanoCPUs": 10**9,
                                                             "MemoryBytes": 512 << 20}
        assert mlp["TaskTemplate"]["Placement"]["Constraints"] == ["node.role==manager"]
        echo = service_spec(f"sgw-echo-v1-{versions(doc)['v1']['replicas'][0]['id']}")
        assert echo["TaskTemplate"]["Placement"]["Preferences"] == [
            {"Spread": {"SpreadDescriptor": "node.hostname"}}]      # gateway.swarm's default
        assert len(labelled_services(instance)) == 4
        _, shown, _ = await run_cli("status", "--admin", gw.admin(""))
        head, *rows = shown[shown.index("REPLICA "):].splitlines()
        assert head.split()[-1] == "NODE" and all(row.split()[-1] == host for row in rows)
        code, shown, err = await run_cli("plan", gw.config_path, "--admin", gw.admin(""))
        assert code == 0, err
        assert f"node {host}: echo/v1 x2, mlp/v1 x2; 0 NVIDIA-GPU reserved" in shown
    assert labelled_services(instance) == []       # `up` exiting removed what it started


async def test_killed_task_under_load_fails_no_get(tmp_path: Path, instance: str,
                                                   network: str) -> None:
    async with GatewayContainer(tmp_path, {"echo": echo(replicas=2)}, instance, network) as gw, \
            aiohttp.ClientSession() as s:
        victim = min(rep["id"] for rep in versions(await gw.status())["v1"]["replicas"])
        statuses: list[int | str] = []
        stop = asyncio.Event()

        async def client() -> None:
            while not stop.is_set():
                try:
                    async with s.get(gw.url("/v1/echo")) as r:
                        await r.read()
                        statuses.append(r.status)
                except aiohttp.ClientError as exc:
                    statuses.append(repr(exc))
                await asyncio.sleep(0.005)          # bounded load

        async def replaced() -> bool:
            group = versions(await gw.status())["v1"]
            ids = {rep["id"] for rep in group["replicas"] if rep["state"] == "ready"}
            return group["ready"] == 2 and victim not in ids

        clients = [asyncio.ensure_future(client()) for _ in range(4)]
        try:
            await wait_until(lambda: len(statuses) > 50, 20, what="load to run")
            await adocker("kill", task_container(victim))
            await wait_until(replaced, 60, what="a replacement replica ready", interval=0.2)
            settled = len(statuses)
            await wait_until(lambda: len(statuses) > settled + 50, 20, what="load after recovery")
        finally:
            stop.set()
            await asyncio.gather(*clients)
        failed = [st for st in statuses if st != 200]
        assert not failed, f"{len(failed)} of {len(statuses)} GETs failed: {failed[:5]}"
        group = versions(await gw.status())["v1"]
        assert group["restarts"] == 1 and "killed" in group["last_exit"]
        # the killed replica's service is removed; the replacement is a new service
        await wait_until(lambda: len(labelled_services(instance)) == 2, 20,
                         what="the killed replica's service removed", interval=0.2)
        names = {service_spec(sid)["Name"] for sid in labelled_services(instance)}
        assert f"sgw-echo-v1-{victim}" not in names
    assert labelled_services(instance) == []


async def test_scale_out_and_in_under_load_answers_every_request(
        tmp_path: Path, instance: str, network: str) -> None:
    async with GatewayContainer(tmp_path, {"echo": echo(replicas=1)}, instance, network) as gw:
        async with Load([gw.url("/v1/echo")], clients=4) as load:
            await wait_until(lambda: load.count() > 50, 20, what="load to run")
            code, _, err = await run_cli("scale", "echo/v1", "3", "--admin", gw.admin(""))
            assert code == 0, err
            await wait_until(lambda: _ready(gw, 3), 60, what="3 replicas ready", interval=0.2)
            assert len(labelled_services(instance)) == 3
            served = load.count()
            await wait_until(lambda: load.count() > served + 100, 20, what="load on 3")
            code, _, err = await run_cli("scale", "echo/v1", "1", "--admin", gw.admin(""))
            assert code == 0, err
            # scale-in drains a replica before its service goes
            await wait_until(lambda: len(labelled_services(instance)) == 1, 60,
                             what="two services removed", interval=0.2)
            served = load.count()
            await wait_until(lambda: load.count() > served + 50, 20, what="load on 1")
            await load.stop()
        assert not load.failures, f"{len(load.failures)} of {load.count()}: {load.failures[:5]}"
        assert versions(await gw.status())["v1"]["ready"] == 1


async def _ready(gw: GatewayContainer, n: int) -> bool:
    group = versions(await gw.status())["v1"]
    return bool(group["ready"] == n)


def canary(steps: list[dict[str, Any]], v2_env: dict[str, str],
           analysis: dict[str, Any] | None) -> dict[str, Any]:
    svc = echo(replicas=2, env={"ECHO_TAG": "v1"})
    svc["versions"]["v2"] = {**svc["versions"]["v1"], "env": {"ECHO_TAG": "v2", **v2_env}}
    svc["rollout"] = {"strategy": "canary", "from": "v1", "to": "v2", "canary_replicas": 1,
                      "scale_down_delay": "0s", "steps": steps, "analysis": analysis}
    return {"echo": svc}


async def rollout(gw: GatewayContainer) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s, s.get(gw.admin("/rollouts/echo")) as r:
        assert r.status == 200, await r.text()
        doc: dict[str, Any] = await r.json()
        return doc


async def test_canary_on_swarm_services_rolls_back_by_itself(tmp_path: Path, instance: str,
                                                             network: str) -> None:
    services = canary([{"weight": 50, "pause": "60s"}], {"ECHO_FAIL_EVERY": "10"},
                      {"interval": "1s", "min_requests": 20, "failure_limit": 2,
                       "max_error_rate": 0.01})
    async with GatewayContainer(tmp_path, services, instance, network, ready=False) as gw:
        async with Load([gw.url("/v1/echo")]) as load:
            async def degraded() -> bool:
                doc = await rollout(gw)
                assert doc["phase"] not in ("done", "aborted"), doc
                return bool(doc["phase"] == "degraded")
            await wait_until(degraded, 120, what="the canary rolled back", interval=0.3)
            tail = len(load.failures)
            served = load.count()
            await wait_until(lambda: load.count() > served + 100, 20, what="load after rollback")
            await load.stop()
        doc = await rollout(gw)
        assert doc["weights"] == {"v1": 100, "v2": 0} and "error_rate" in doc["reason"]
        assert {served for _, _, served, _ in load.failures} <= {"echo/v2"}, load.failures[:5]
        assert load.failures[tail:] == []           # after the rollback: v1 only, no errors
        async with aiohttp.ClientSession() as s, s.get(gw.admin("/metrics")) as r:
            text = await r.text()
        assert metric_value(text, "serve_gateway_rollouts_total", service="echo",
                            strategy="canary", outcome="degraded") == 1
        # the canary's replica service goes away with its weight
        await wait_until(lambda: service_versions(instance) == {"v1"}, 60,
                         what="v2's services removed", interval=0.3)


async def test_controller_restart_adopts_services_and_resumes_the_canary(
        tmp_path: Path, instance: str, network: str) -> None:
    services = canary([{"weight": 50, "pause": None}], {}, None)
    (tmp_path / "first").mkdir()
    first = GatewayContainer(tmp_path / "first", services, instance, network, ready=False,
                             name="first")
    first.up_args = ["--keep-replicas"]
    async with first:
        async def at_step() -> bool:
            doc = await rollout(first)
            return bool(doc["weights"] == {"v1": 50, "v2": 50}) and await first.all_ready()
        await wait_until(at_step, 90, what="canary at 50%", interval=0.3)
        began = (await rollout(first))["started_at"]
    # the journal lives in the swarm (a config), not on the first controller's disk
    assert not list((tmp_path / "first").glob("state/rollouts/*.json"))
    assert docker_cli("config", "ls", "-q", "--filter", "label=serve-gateway.journal=echo",
                      "--filter", f"label=serve-gateway.instance={instance}")
    kept = sorted(labelled_services(instance))
    assert len(kept) == 3, "--keep-replicas left the services running"
    started = {sid: json.loads(docker_cli("service", "inspect", sid))[0]["UpdatedAt"]
               for sid in kept}
    # the second controller shares nothing on disk with the first but the config
    (tmp_path / "second").mkdir()
    second = GatewayContainer(tmp_path / "second", services, instance, network, ready=False,
                              name="second")
    async with second:
        async def resumed() -> bool:
            doc = await rollout(second)
            return bool(doc["weights"] == {"v1": 50, "v2": 50}) and await second.all_ready()
        await wait_until(resumed, 60, what="the rollout resumed on adopted replicas",
                         interval=0.3)
        assert (await rollout(second))["started_at"] == began     # resumed, not restarted
        group = versions(await second.status())
        assert all(rep["adopted"] for v in group.values() for rep in v["replicas"])
        assert sorted(labelled_services(instance)) == kept
        assert {sid: json.loads(docker_cli("service", "inspect", sid))[0]["UpdatedAt"]
                for sid in kept} == started
        async with Load([second.url("/v1/echo")], clients=3) as load:
            code, _, err = await run_cli("rollout", "promote", "echo", "--full", "--admin",
                                         second.admin(""))
            assert code == 0, err

            async def done() -> bool:
                return bool((await rollout(second))["phase"] == "done")
            await wait_until(done, 90, what="promoted", interval=0.3)
            await load.stop()
        assert not load.failures, load.failures[:5]
        await wait_until(lambda: service_versions(instance) == {"v2"}, 60,
                         what="v1's services removed", interval=0.3)
    assert labelled_services(instance) == []
