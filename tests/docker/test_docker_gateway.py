"""The whole gateway (`serve-gateway up`) on the docker runtime, against the real daemon and the
real serve-gateway-worker:dev image: serving, crash under load, restart and adoption, orphans,
reload, OOM and GPU requests. Docker itself is checked through the `docker` CLI."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from gateway.spec import load_spec
from tests.docker.apitap import DockerApiTap
from tests.docker.cli import INSTANCE_LABEL, WORKER_IMAGE, adocker, docker_cli, inspect, labelled
from tests.helpers import REPO_ROOT, GatewayProc, metric_value, run_cli, wait_until

pytestmark = pytest.mark.docker

QUICKSTART = REPO_ROOT / "config" / "docker-quickstart.yaml"


def echo(replicas: int = 1, **version: Any) -> dict[str, Any]:
    """An echo service on containers (the worker image's default command)."""
    return {"route": "/v1/echo", "rewrite": "/predict",
            "versions": {"v1": {"image": WORKER_IMAGE, "port": 8000, "replicas": replicas,
                                **version}}}


def gateway(tmp_path: Path, instance: str, services: dict[str, Any], ready: bool = True,
            **docker: Any) -> GatewayProc:
    return GatewayProc(tmp_path, services, ready=ready, runtime="docker", instance=instance,
                       docker={"gpus": [], **docker}, stop_grace="3s")


async def get_json(s: aiohttp.ClientSession, url: str) -> Any:
    async with s.get(url) as r:
        assert r.status == 200, (url, r.status, await r.text())
        return await r.json()


def versions(doc: dict[str, Any], service: str = "echo") -> dict[str, Any]:
    v: dict[str, Any] = doc["services"][service]["versions"]
    return v


async def metric(gw: GatewayProc, name: str, **labels: str) -> float | None:
    async with aiohttp.ClientSession() as s, s.get(gw.admin("/metrics")) as r:
        return metric_value(await r.text(), name, **labels)


def running_ids(instance: str) -> list[str]:
    return docker_cli("ps", "-q", "--no-trunc", "--filter", f"label={INSTANCE_LABEL}={instance}").split()


async def test_quickstart_services_run_on_containers(tmp_path: Path, instance: str) -> None:
    """config/docker-quickstart.yaml as shipped (only ports, state and instance changed)."""
    services = yaml.safe_load(QUICKSTART.read_text())["services"]
    gw = gateway(tmp_path, instance, services)
    async with gw, aiohttp.ClientSession() as s:
        async with s.post(gw.url("/v1/echo"), json={"instances": [{"x": 1}]}) as r:
            assert r.status == 200 and (await r.json())["predictions"] == [{"x": 1}]
        async with s.post(gw.url("/v1/mlp"), json={"instances": [[0.1] * 512, [0.2] * 512]}) as r:
            assert r.status == 200, await r.text()
            predictions = (await r.json())["predictions"]
            assert [len(p) for p in predictions] == [16, 16]
        doc = await gw.status()
        assert doc["runtime"] == "docker"
        for service in ("echo", "mlp"):
            (group,) = versions(doc, service).values()
            assert group["ready"] == 2
            for rep in group["replicas"]:
                assert rep["address"].startswith("127.0.0.1:") and not rep["adopted"]
                assert 0 < rep["cold_start_s"] < 60
                attrs = inspect(f"sgw-{service}-v1-{rep['id']}")
                assert attrs["Config"]["Labels"]["serve-gateway.revision"] == group["revision"]
        mlp = inspect(f"sgw-mlp-v1-{versions(doc, 'mlp')['v1']['replicas'][0]['id']}")
        assert mlp["HostConfig"]["Memory"] == 512 << 20
        assert "OMP_NUM_THREADS=1" in mlp["Config"]["Env"]
        assert await metric(gw, "serve_gateway_replica_cold_start_seconds_count",
                            service="mlp", version="v1") == 2
        assert len(running_ids(instance)) == 4
    assert labelled("containers", instance) == []        # `up` exiting stopped what it started


async def test_docker_kill_under_load_fails_no_get(tmp_path: Path, instance: str) -> None:
    async with gateway(tmp_path, instance, {"echo": echo(replicas=2)}) as gw, \
            aiohttp.ClientSession() as s:
        before = {rep["id"] for rep in versions(await gw.status())["v1"]["replicas"]}
        victim = min(before)
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
                await asyncio.sleep(0.002)       # bounded load: a few hundred requests/s

        async def replaced() -> bool:
            group = versions(await gw.status())["v1"]
            ids = {rep["id"] for rep in group["replicas"] if rep["state"] == "ready"}
            return group["ready"] == 2 and victim not in ids

        clients = [asyncio.ensure_future(client()) for _ in range(4)]
        try:
            await wait_until(lambda: len(statuses) > 50, 10, what="load to run")
            await adocker("kill", f"sgw-echo-v1-{victim}")
            await wait_until(replaced, 20, what="a replacement replica ready", interval=0.1)
            settled = len(statuses)
            await wait_until(lambda: len(statuses) > settled + 50, 10, what="load after recovery")
        finally:
            stop.set()
            await asyncio.gather(*clients)
        failed = [st for st in statuses if st != 200]
        assert not failed, f"{len(failed)} of {len(statuses)} GETs failed: {failed[:5]}"
        group = versions(await gw.status())["v1"]
        assert group["restarts"] == 1 and "killed" in group["last_exit"]
        assert await metric(gw, "serve_gateway_replica_exits_total", service="echo",
                            version="v1", reason="killed") == 1
        # the killed container is removed, not left behind until the next gateway start
        await wait_until(lambda: len(labelled("containers", instance)) == 2, 10,
                         what="the killed container removed", interval=0.1)
    assert labelled("containers", instance) == []


async def test_restart_with_keep_replicas_adopts_every_container(tmp_path: Path,
                                                                 instance: str) -> None:
    services = {"echo": echo(replicas=2)}
    (tmp_path / "first").mkdir()
    first = gateway(tmp_path / "first", instance, services)
    first.up_args = ["--keep-replicas"]
    async with first:
        kept = {rep["id"] for rep in versions(await first.status())["v1"]["replicas"]}
    assert "leaving replica" in first.log()
    containers = running_ids(instance)
    assert len(containers) == 2, "--keep-replicas left the containers running"
    started = {cid: inspect(cid)["State"]["StartedAt"] for cid in containers}

    (tmp_path / "second").mkdir()
    second = gateway(tmp_path / "second", instance, services, ready=False)
    async with second, aiohttp.ClientSession() as s:
        up = time.monotonic()

        async def serving() -> bool:
            try:
                async with s.get(second.url("/v1/echo")) as r:
                    return r.status == 200 and await second.all_ready()
            except aiohttp.ClientError:
                return False

        await wait_until(serving, 2.0, what="serving through adopted replicas", interval=0.02)
        assert time.monotonic() - up < 2.0
        group = versions(await second.status())["v1"]
        assert {rep["id"] for rep in group["replicas"]} == kept
        assert all(rep["adopted"] and rep["cold_start_s"] is None for rep in group["replicas"])
        assert group["restarts"] == 0
        # not one container restarted or replaced
        assert sorted(running_ids(instance)) == sorted(containers)
        assert {cid: inspect(cid)["State"]["StartedAt"] for cid in containers} == started
        assert all(inspect(cid)["RestartCount"] == 0 for cid in containers)
    assert "adopted replica" in second.log()
    assert labelled("containers", instance) == []          # a plain `up` stops them on exit


async def test_second_up_on_the_same_state_leaves_the_first_containers_alone(
        tmp_path: Path, instance: str) -> None:
    """A second `up` of the same config is refused with the first's pid before it lists, adopts
    or removes a container (on main it took them over and stopped them: 295 x 502)."""
    from tests.helpers import Load

    gw = gateway(tmp_path, instance, {"echo": echo(replicas=2)})
    async with gw:
        assert gw.proc is not None
        containers = sorted(running_ids(instance))
        started = {cid: inspect(cid)["State"]["StartedAt"] for cid in containers}
        async with Load([gw.url("/v1/echo")], clients=2) as load:
            code, _, err = await run_cli("up", gw.config_path, timeout=60)
            await load.stop()
        assert code == 1 and f"pid {gw.proc.pid}" in err, err
        assert not load.failures, load.failures[:5]
        assert sorted(running_ids(instance)) == containers
        assert {cid: inspect(cid)["State"]["StartedAt"] for cid in containers} == started
        assert len(versions(await gw.status())["v1"]["replicas"]) == 2


def stale_container(instance: str, version: str, revision: str, replica: str) -> str:
    """A container as an earlier gateway would have left it (labels and published port)."""
    labels = {"instance": instance, "service": "echo", "version": version,
              "revision": revision, "replica": replica, "port": "8000"}
    args = [a for k, v in labels.items() for a in ("--label", f"serve-gateway.{k}={v}")]
    return docker_cli("run", "-d", "--init", *args, "-p", "127.0.0.1::8000",
                      "--name", f"sgw-echo-{version}-{replica}", WORKER_IMAGE, "sleep", "600")


async def test_stale_revisions_and_removed_versions_are_removed_on_start(tmp_path: Path,
                                                                         instance: str) -> None:
    stale = stale_container(instance, "v1", "0ld0ld0ld0ld", "stale1")
    gone = stale_container(instance, "v0", "0ld0ld0ld0ld", "gone1")
    async with gateway(tmp_path, instance, {"echo": echo(replicas=1)}) as gw:
        await wait_until(lambda: not set(running_ids(instance)) & {stale, gone}, 15,
                         what="the leftover containers removed", interval=0.1)
        assert not set(docker_cli("ps", "-aq", "--no-trunc").split()) & {stale, gone}
        group = versions(await gw.status())["v1"]
        (rep,) = group["replicas"]
        assert not rep["adopted"] and rep["revision"] == group["revision"] != "0ld0ld0ld0ld"
        assert len(running_ids(instance)) == 1
    assert "stopping leftover replica stale1" in gw.log()
    assert "stopping leftover replica gone1" in gw.log()


async def test_reload_adds_then_removes_a_version(tmp_path: Path, instance: str) -> None:
    async with gateway(tmp_path, instance, {"echo": echo(replicas=1)}) as gw, \
            aiohttp.ClientSession() as s:
        v1 = gw.config["services"]["echo"]["versions"]["v1"]
        two = json.loads(json.dumps(gw.config))
        svc = two["services"]["echo"]
        svc["versions"]["v2"] = {**v1, "env": {"ECHO_TAG": "v2"}}
        svc["traffic"] = {"weights": {"v1": 1, "v2": 1}}
        gw.rewrite(two)
        async with s.post(gw.admin("/reload"), headers=gw.auth) as r:
            assert r.status == 200 and (await r.json())["ok"]
        await wait_until(gw.all_ready, 20, what="v2 ready", interval=0.1)

        async def tags(n: int = 20) -> set[str | None]:
            seen = set()
            for _ in range(n):
                async with s.post(gw.url("/v1/echo"), json={"instances": [{"x": 1}]}) as r:
                    assert r.status == 200
                    seen.add((await r.json())["predictions"][0].get("tag"))
            return seen

        async def both() -> bool:
            return await tags() == {None, "v2"}

        await wait_until(both, 5, what="v1 and v2 both answering")   # v2 joins once ready
        assert len(running_ids(instance)) == 2

        svc["versions"].pop("v1")
        svc["traffic"] = {"weights": {"v2": 1}}
        gw.rewrite(two)
        async with s.post(gw.admin("/reload"), headers=gw.auth) as r:
            assert r.status == 200 and (await r.json())["ok"]
        assert await tags() == {"v2"}
        await wait_until(lambda: len(running_ids(instance)) == 1, 15,
                         what="v1's container removed", interval=0.1)
        (cid,) = running_ids(instance)
        assert inspect(cid)["Config"]["Labels"]["serve-gateway.version"] == "v2"
    assert labelled("containers", instance) == []


async def test_oom_kill_shows_in_status_and_metrics(tmp_path: Path, instance: str) -> None:
    hog = "import time; time.sleep(0.5); x = bytearray(256 << 20); time.sleep(60)"
    services = {"echo": echo(command=["python", "-c", hog], resources={"memory": "64MiB"})}
    async with gateway(tmp_path, instance, services, ready=False) as gw:
        async def oom_seen() -> bool:
            return versions(await gw.status())["v1"]["last_exit"] == "was OOM-killed"

        await wait_until(oom_seen, 20, what="the OOM kill in /status", interval=0.1)
        assert (await metric(gw, "serve_gateway_replica_exits_total", service="echo",
                             version="v1", reason="oom_killed") or 0) >= 1
    assert "was OOM-killed" in gw.log()
    assert labelled("containers", instance) == []


async def test_gpu_device_request_reaches_the_docker_api(tmp_path: Path, instance: str) -> None:
    """Two replicas of a one-GPU version on a fake GPU list [0, 1]: each create asks Docker for
    its own GPU. Without a GPU (here) the container cannot start and the gateway says why."""
    async with DockerApiTap(str(tmp_path / "docker.sock")) as tap:
        services = {"echo": echo(replicas=2, resources={"gpus": 1})}
        gw = gateway(tmp_path, instance, services, ready=False, gpus=[0, 1],
                     base_url=tap.base_url)
        async with gw:
            await wait_until(lambda: len(tap.container_creates()) >= 2, 15,
                             what="two container creates", interval=0.05)
            first_two = tap.container_creates()[:2]
            requests = [c["HostConfig"]["DeviceRequests"] for c in first_two]
            assert sorted(r[0]["DeviceIDs"] for r in requests) == [["0"], ["1"]]
            for (request,) in requests:
                assert request["Driver"] == "nvidia" and request["Capabilities"] == [["gpu"]]
            assert all(c["Labels"]["serve-gateway.instance"] == instance for c in first_two)
            doc = await gw.status()
            if not doc["services"]["echo"]["versions"]["v1"]["ready"]:    # no GPU host
                await wait_until(lambda: _start_failed(gw), 10, what="the start failure shown")


async def _start_failed(gw: GatewayProc) -> bool:
    last = versions(await gw.status())["v1"]["last_exit"]
    return "start failed" in last and "nvidia" in last


async def test_plan_needing_more_gpus_than_exist_is_refused(tmp_path: Path, instance: str) -> None:
    config = yaml.safe_load(QUICKSTART.read_text())
    config["gateway"].update(instance=instance, docker={"gpus": [0, 1]},
                             state_dir=str(tmp_path / "state"), listen="127.0.0.1:0",
                             admin={"listen": "127.0.0.1:0"})
    config["services"]["mlp"]["versions"]["v1"]["resources"]["gpus"] = 2     # 2 x 2 > 2
    path = tmp_path / "gpus.yaml"
    path.write_text(yaml.safe_dump(config))
    load_spec(path)                                  # a valid file: refused by the runtime
    code, _, err = await run_cli("up", path, timeout=30)
    assert code == 1, err
    assert "services.mlp.versions.v1.resources.gpus: mlp/v1 needs 4 GPUs" in err
    assert "this gateway has 2 (ids 0, 1)" in err and "Traceback" not in err
    assert labelled("containers", instance) == []     # refused before anything started



async def test_revision_rollout_on_containers_survives_a_restart_and_drops_nothing(
        tmp_path: Path, instance: str) -> None:
    """A changed env rolls out by canary on containers; a gateway restarted mid-rollout with
    --keep-replicas adopts both revisions' containers (the old one under v1.<revision>) and
    resumes the step; promotion then drops no request."""
    from tests.helpers import Load

    services = {"echo": {**echo(replicas=2, env={"ECHO_TAG": "old"}),
                         "rollout": {"strategy": "canary", "analysis": None,
                                     "scale_down_delay": "0s",
                                     "steps": [{"weight": 50, "pause": None}]}}}
    (tmp_path / "first").mkdir()
    first = gateway(tmp_path / "first", instance, services)
    first.up_args = ["--keep-replicas"]
    async with first:
        old = versions(await first.status())["v1"]["revision"]
        first.config["services"]["echo"]["versions"]["v1"]["env"]["ECHO_TAG"] = "new"
        first.rewrite(first.config)
        async with Load([first.url("/v1/echo")], clients=3) as load:
            code, _, err = await run_cli("reload", "--admin", first.admin(""))
            assert code == 0, err

            async def both() -> bool:
                v = versions(await first.status())
                return v[f"v1.{old}"]["ready"] == 2 and v["v1"]["ready"] == 1 \
                    and load.count(served_by="echo/v1") > 5
            await wait_until(both, 60, what="old and new revision serving")
            await load.stop()
        assert not load.failures, load.failures[:5]
    containers = sorted(running_ids(instance))
    assert len(containers) == 3
    # the second gateway shares the first's state dir: it resumes the journaled rollout
    second = gateway(tmp_path / "first", instance, first.config["services"], ready=False)
    async with second:
        await wait_until(lambda: _rollout_weights(second, {f"v1.{old}": 50, "v1": 50}), 20,
                         what="the rollout resumed")
        await wait_until(second.all_ready, 30, what="adopted")
        assert sorted(running_ids(instance)) == containers       # adopted, none restarted
        async with Load([second.url("/v1/echo")], clients=3) as load:
            code, _, err = await run_cli("rollout", "promote", "echo", "--full", "--admin",
                                         second.admin(""))
            assert code == 0, err

            async def done() -> bool:
                doc = await get_json_admin(second, "/rollouts/echo")
                return bool(doc["phase"] == "done")
            await wait_until(done, 60, what="promoted")
            await load.stop()
        assert not load.failures, load.failures[:5]
        await wait_until(lambda: len(running_ids(instance)) == 2, 30, what="old revision gone")


async def get_json_admin(gw: GatewayProc, path: str) -> Any:
    async with aiohttp.ClientSession() as s:
        return await get_json(s, gw.admin(path))


async def _rollout_weights(gw: GatewayProc, weights: dict[str, int]) -> bool:
    try:
        doc = await get_json_admin(gw, "/rollouts/echo")
    except aiohttp.ClientError:
        return False
    return bool(doc["weights"] == weights)
