"""deploy/stack.yml, config/swarm-stack.yaml and config/prometheus-stack.yml agree, offline:
`docker stack config` (the CLI's own merge and interpolation, no daemon or swarm needed) and
promtool. The stack is deployed for real by test_swarm_multinode.py."""

from __future__ import annotations

import os
import subprocess
from typing import Any

import pytest
import yaml

from gateway.cli import build_parser
from gateway.spec import load_spec
from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.docker

STACK_FILE = REPO_ROOT / "deploy" / "stack.yml"
GATEWAY_CONFIG = REPO_ROOT / "config" / "swarm-stack.yaml"
PROMETHEUS = REPO_ROOT / "config" / "prometheus-stack.yml"
PROMTOOL = "/usr/bin/promtool"


def stack_config(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SGW_")}
    return subprocess.run(["docker", "stack", "config", "-c", str(STACK_FILE)],
                          env={**clean, **env}, capture_output=True, text=True, check=False,
                          timeout=60)


def seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for unit in ("ms", "s", "m", "h"):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * units[unit]
    return float(text)


def test_stack_file_deploys_the_controller_a_data_plane_per_node_and_monitoring() -> None:
    done = stack_config(SGW_ADMIN_TOKEN="t0ken")
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = yaml.safe_load(done.stdout)
    services = doc["services"]
    assert set(services) == {"controller", "dataplane", "prometheus", "grafana"}
    ctl, dp = services["controller"], services["dataplane"]
    spec = load_spec(GATEWAY_CONFIG)
    g = spec.gateway
    admin_port = g.admin.listen.rsplit(":", 1)[1]

    # one controller, on a manager (it drives Swarm through that daemon's socket), with the config
    assert g.runtime == "swarm"
    assert ctl["deploy"]["replicas"] == 1
    assert ctl["deploy"]["placement"]["constraints"] == ["node.role == manager"]
    assert ctl["command"] == ["up", "/etc/serve-gateway/config.yaml"]
    assert [c["target"] for c in ctl["configs"]] == ["/etc/serve-gateway/config.yaml"]
    assert doc["configs"]["gateway-config"]["file"] == str(GATEWAY_CONFIG)
    assert any(v["target"] == "/var/run/docker.sock" for v in ctl["volumes"])
    # a data-plane gateway on every node, following the controller by its service name
    assert dp["deploy"]["mode"] == "global"
    cmd = dp["command"]
    args = build_parser().parse_args(cmd)       # the command the image's CLI really takes
    assert args.controller == f"http://controller:{admin_port}"
    assert args.listen == "0.0.0.0:8080" and args.health
    assert "controller" in g.admin.allow_hosts and "0.0.0.0" in g.admin.listen
    # both share the token the controller's admin API checks
    assert g.admin.token_env is not None
    assert ctl["environment"][g.admin.token_env] == dp["environment"][g.admin.token_env] == "t0ken"
    # the overlay the controller starts replicas on is the stack's, under a fixed name
    (net,) = doc["networks"].values()
    assert net["driver"] == "overlay" and net["attachable"] is True
    assert net["name"] == g.swarm.network
    for svc in services.values():
        assert svc["networks"] == {"serve-gateway": None}
        # no VIP and no ingress mesh: both need IPVS; the gateway balances replicas itself
        assert svc["deploy"].get("endpoint_mode") == "dnsrr"
        assert all(p["mode"] == "host" for p in svc.get("ports", []))
    published = {p["target"] for p in dp["ports"]}
    assert published == {8080, int(args.health.rsplit(":", 1)[1])}
    # SIGTERM from `docker stack rm` / an update leaves time for the drain and the replicas' stop
    assert g.drain_timeout + g.stop_grace <= seconds(ctl["stop_grace_period"])

    missing = stack_config()
    assert missing.returncode != 0 and "SGW_ADMIN_TOKEN" in missing.stderr


def test_stack_prometheus_scrapes_the_controller() -> None:
    done = subprocess.run([PROMTOOL, "check", "config", str(PROMETHEUS)], capture_output=True,
                          text=True, check=False, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    (job,) = yaml.safe_load(PROMETHEUS.read_text())["scrape_configs"]
    g = load_spec(GATEWAY_CONFIG).gateway
    assert job["static_configs"][0]["targets"] == [f"controller:{g.admin.listen.rsplit(':', 1)[1]}"]
    assert "metrics" in g.admin.public
