"""The Compose deployment: docker-compose.yml, config/docker-compose.yaml, config/prometheus.yml
and the Grafana provisioning. No registry is reachable here, so the Prometheus and Grafana images
are never pulled: their configs are checked offline (promtool), and of the Compose file only the
gateway service runs, from the locally built image, against the real daemon."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import uuid
from pathlib import Path

import aiohttp
import pytest
import yaml

from gateway.spec import load_spec
from tests.docker.cli import docker_cli, inspect, labelled
from tests.helpers import REPO_ROOT, free_port, wait_http_ok, wait_until

pytestmark = pytest.mark.docker

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
GATEWAY_CONFIG = REPO_ROOT / "config" / "docker-compose.yaml"
PROMETHEUS = REPO_ROOT / "config" / "prometheus.yml"
GRAFANA = REPO_ROOT / "config" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "serve-gateway.json"
PROMTOOL = "/usr/bin/promtool"
# Metrics the dashboard graphs before the gateway exports them (rollouts: issue 7).
PENDING_METRICS = {"serve_gateway_rollout_phase"}


@functools.cache
def compose_cmd() -> tuple[str, ...]:
    """`docker compose` (v2 plugin) where installed, else `docker-compose` (Debian's v1)."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True, check=False,
                      timeout=30).returncode == 0:
        return ("docker", "compose")
    return ("docker-compose",)


def compose(project: str, *args: str, env: dict[str, str], check: bool = True,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*compose_cmd(), "-f", str(COMPOSE_FILE), "-p", project, *args],
                          cwd=REPO_ROOT, env={**os.environ, **env}, capture_output=True,
                          text=True, check=False, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"compose {' '.join(args)} failed ({done.returncode}):\n"
                             f"{done.stdout}\n{done.stderr}")
    return done


def test_compose_file_and_gateway_config_agree() -> None:
    env = {"SGW_ADMIN_TOKEN": "t0ken"}
    doc = yaml.safe_load(compose("sgwcheck", "config", env=env).stdout)
    gw = doc["services"]["gateway"]
    assert gw["image"] == "serve-gateway:dev" and gw["build"]["dockerfile"] == "Dockerfile"
    mounts = {v.split(":")[1]: v.split(":")[0] for v in gw["volumes"]}
    assert mounts["/var/run/docker.sock"] == "/var/run/docker.sock"
    assert mounts["/etc/serve-gateway/config.yaml"] == str(GATEWAY_CONFIG)
    assert gw["environment"]["SGW_ADMIN_TOKEN"] == "t0ken"
    assert {p.split(":")[0] for p in gw["ports"]} == {"127.0.0.1"}   # loopback of the host
    assert set(doc["services"]) == {"gateway", "prometheus", "grafana"}

    spec = load_spec(GATEWAY_CONFIG)
    g = spec.gateway
    assert g.runtime == "docker" and g.docker.network == doc["networks"]["serve-gateway"]["name"]
    assert g.admin.token_env == "SGW_ADMIN_TOKEN" and g.admin.listen.startswith("0.0.0.0:")
    # SIGTERM from `docker compose stop` leaves time for the drain and the replicas' stop
    grace = float(gw["stop_grace_period"].rstrip("s"))
    assert g.drain_timeout + g.stop_grace <= grace

    missing = compose("sgwcheck", "config", "-q", env={"SGW_ADMIN_TOKEN": ""}, check=False)
    assert missing.returncode != 0 and "SGW_ADMIN_TOKEN" in missing.stderr

    prometheus = yaml.safe_load(PROMETHEUS.read_text())
    (job,) = prometheus["scrape_configs"]
    assert job["static_configs"][0]["targets"] == [f"gateway:{g.admin.listen.rsplit(':', 1)[1]}"]


def test_prometheus_and_grafana_configs_are_valid(tmp_path: Path) -> None:
    done = subprocess.run([PROMTOOL, "check", "config", str(PROMETHEUS)], capture_output=True,
                          text=True, check=False, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr

    (source,) = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())[
        "datasources"]
    (provider,) = yaml.safe_load((GRAFANA / "provisioning/dashboards/serve-gateway.yml").read_text())[
        "providers"]
    assert source["url"] == "http://prometheus:9090"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert {t["datasource"]["uid"] for p in panels for t in p["targets"]} == {source["uid"]}
    titles = " ".join(p["title"] for p in panels).lower()
    for topic in ("requests/s", "p50 / p99", "errors", "batch size", "queue",
                  "replicas by state", "shadow agreement", "rollout phase"):
        assert topic in titles, topic

    # Every query parses as PromQL: promtool checks them as recording rules, offline.
    rules = [{"record": f"dashboard:panel_{p['id']}_{t['refId']}",
              "expr": t["expr"].replace("$__rate_interval", "1m").replace("$__range", "1h")
                                  .replace("$service", ".*")}
             for p in panels for t in p["targets"]]
    rules_file = tmp_path / "rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run([PROMTOOL, "check", "rules", str(rules_file)], capture_output=True,
                          text=True, check=False, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr

    # ... and every metric it names is one the gateway exports (or one still to come).
    exported = set()
    for path in (REPO_ROOT / "gateway").rglob("*.py"):
        exported |= set(re.findall(r"[\"'](serve_gateway_[a-z_]+)[\"']", path.read_text()))
    used = {re.sub(r"_(total|bucket|sum|count)$", "", m)
            for m in re.findall(r"serve_gateway_[a-z_]+", DASHBOARD.read_text())}
    assert used - exported <= PENDING_METRICS, used - exported - PENDING_METRICS


async def test_compose_gateway_serves_from_containers_and_reloads_on_hup(
        tmp_path: Path, instance: str) -> None:
    """`docker compose up -d gateway` with the local image: the gateway container starts the
    workers on the Compose network through the mounted socket, serves through its published
    port, reloads on `docker compose kill -s HUP gateway`, and stops its workers on `down`."""
    network = f"sgw-{instance}"
    config = yaml.safe_load(GATEWAY_CONFIG.read_text())
    config["gateway"].update(instance=instance, drain_timeout="2s", stop_grace="2s")
    config["gateway"]["docker"]["network"] = network
    config["services"].pop("mlp")
    config["services"]["echo"]["versions"]["v1"]["replicas"] = 1
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    http, admin, token = free_port(), free_port(), uuid.uuid4().hex
    env = {"SGW_ADMIN_TOKEN": token, "SGW_CONFIG": str(config_path), "SGW_NETWORK": network,
           "SGW_HTTP_PORT": str(http), "SGW_ADMIN_PORT": str(admin)}
    project = instance
    up = False
    base = f"http://127.0.0.1:{admin}"

    auth = {"Authorization": f"Bearer {token}"}

    async def ready(n: int) -> bool:    # admin on 0.0.0.0: reads need the token too
        async with aiohttp.ClientSession() as s, s.get(f"{base}/status", headers=auth) as r:
            group = (await r.json())["services"]["echo"]["versions"]["v1"]
            return bool(group["ready"] == n)

    try:
        up = True                                   # from here on, `down` cleans up after us
        compose(project, "up", "-d", "--no-deps", "--no-build", "gateway", env=env)
        await wait_http_ok(f"{base}/healthz", 30)
        await wait_until(lambda: ready(1), 30, what="one echo replica ready", interval=0.1)
        async with aiohttp.ClientSession() as s:
            async with s.post(f"http://127.0.0.1:{http}/v1/echo", json={"instances": [7]}) as r:
                assert r.status == 200 and (await r.json())["predictions"] == [7]
            async with s.post(f"{base}/reload") as r:          # admin on 0.0.0.0: token needed
                assert r.status == 401
            async with s.get(f"{base}/status") as r:
                assert r.status == 401
            # how Prometheus scrapes it: no token (gateway.admin.public), Host "gateway"
            async with s.get(f"{base}/metrics", headers={"Host": "gateway:8081"}) as r:
                assert r.status == 200
        (worker,) = labelled("containers", instance)
        attrs = inspect(worker)
        assert network in attrs["NetworkSettings"]["Networks"]
        assert not attrs["HostConfig"]["PortBindings"]           # reached by container address

        config["services"]["echo"]["versions"]["v1"]["replicas"] = 2
        config_path.write_text(yaml.safe_dump(config))           # same inode: the mount sees it
        compose(project, "kill", "-s", "HUP", "gateway", env=env)
        await wait_until(lambda: ready(2), 30, what="two replicas after SIGHUP", interval=0.1)
        async with aiohttp.ClientSession() as s, \
                s.post(f"{base}/reload", headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 200 and (await r.json())["ok"]    # the token reached the gateway

        compose(project, "down", "-v", "-t", "20", env=env)
        up = False
        assert labelled("containers", instance) == []        # the gateway stopped its workers
    finally:
        if up:
            compose(project, "down", "-v", "-t", "5", env=env, check=False)
        left = labelled("containers", instance)
        if left:
            docker_cli("rm", "-f", *left, check=False)
        docker_cli("network", "rm", network, check=False)
