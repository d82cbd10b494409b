"""A Docker Swarm of several nodes on one machine, for the multi-node tests.

Each node is a docker-in-docker container (node.Dockerfile: Debian's docker.io on the project's
base image) on a bridge network that the cluster creates and removes; node 0 is the manager
(`docker swarm init`), the others join as workers. The host talks to each node's dockerd over
TCP on that bridge network only (nothing outside it is reached), and loads the project's images
into every node (`docker save` | `docker load`), since no registry is reachable.

Not --privileged: this host's dockerd lacks CAP_SYS_RESOURCE in its bounding set, and
--privileged then fails ("unable to apply caps"); a node gets every other capability,
unconfined seccomp/AppArmor/system paths and all devices, and its entrypoint makes /sys and the
cgroup mounts writable. Nodes use address pools of their own (10.200/16 local, 10.201/16 for
overlays) so that nothing inside a node overlaps the host's networks.

Everything is named and labelled after the cluster (``sgwm-<hex>``): ``down()`` removes the
nodes with their volumes (the nodes' whole Docker state) and the network, pass or fail.
"""

from __future__ import annotations

import datetime
import json
import subprocess
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
NODE_IMAGE = "serve-gateway-node:bookworm"
CLUSTER_LABEL = "serve-gateway.multinode"
DOCKERD_PORT = 2375
LOCAL_POOL = "10.200.0.0/16"
OVERLAY_POOL = "10.201.0.0/16"
# Every capability this host's dockerd can grant; see the module docstring for why not --privileged.
NODE_SECURITY = ("--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
                 "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
                 "--security-opt", "systempaths=unconfined", "--device-cgroup-rule", "a *:* rwm")


class ClusterError(RuntimeError):
    """A step of building the cluster failed; the message says which and what docker said."""


def run(*args: str, timeout: float = 60, check: bool = True,
        stdin: Any = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(args), capture_output=True, text=True, check=False,
                          timeout=timeout, stdin=stdin)
    if check and done.returncode != 0:
        raise ClusterError(f"`{' '.join(args)}` failed ({done.returncode}): "
                           f"{(done.stderr or done.stdout).strip()[-2000:]}")
    return done


def image_exists(ref: str) -> bool:
    return run("docker", "image", "inspect", ref, check=False, timeout=30).returncode == 0


def base_image() -> str:
    """The base scripts/docker-setup.sh builds the project's images on."""
    return "python:3.12-slim" if image_exists("python:3.12-slim") else "serve-gateway-base:bookworm"


def ensure_node_image() -> None:
    """Build the node image once; cached by name like the base image (docker-setup.sh)."""
    if image_exists(NODE_IMAGE):
        return
    run("docker", "build", "-q", "-f", str(HERE / "node.Dockerfile"), "-t", NODE_IMAGE,
        "--build-arg", "BASE_IMAGE=serve-gateway-base:bookworm", str(HERE), timeout=900)


def build_gateway_image(tag: str) -> None:
    """The gateway image of this tree (layer cache: only the package layers are rebuilt), under
    a tag of its own: serve-gateway:dev on a shared daemon may be another tree's build."""
    run("docker", "build", "-q", "-f", str(REPO_ROOT / "Dockerfile"), "-t", tag,
        "--build-arg", f"BASE_IMAGE={base_image()}", str(REPO_ROOT), timeout=900)


def prune_stale(max_age_s: float = 3600) -> None:
    """Remove the nodes and networks of clusters older than ``max_age_s``: what a test run that
    was killed outright (no teardown) left behind. Younger ones may be another run's."""
    now = datetime.datetime.now(datetime.UTC)
    out = run("docker", "ps", "-a", "--filter", f"label={CLUSTER_LABEL}", "--format",
              f'{{{{.ID}}}} {{{{.Label "{CLUSTER_LABEL}"}}}} {{{{.CreatedAt}}}}', check=False).stdout
    stale: dict[str, list[str]] = {}
    for line in out.splitlines():
        cid, name, created = line.split(" ", 2)
        born = datetime.datetime.strptime(created[:19], "%Y-%m-%d %H:%M:%S").replace(
            tzinfo=datetime.UTC)
        if (now - born).total_seconds() > max_age_s:
            stale.setdefault(name, []).append(cid)
    for name, ids in stale.items():
        run("docker", "rm", "-f", "-v", *ids, check=False, timeout=120)
        run("docker", "network", "rm", name, check=False)


class Cluster:
    def __init__(self, nodes: int = 3) -> None:
        self.name = f"sgwm-{uuid.uuid4().hex[:8]}"
        self.count = nodes
        self.nodes = [f"{self.name}-n{i}" for i in range(nodes)]
        self.ips: dict[str, str] = {}

    # -- building -------------------------------------------------------------------------

    def up(self) -> None:
        ensure_node_image()
        run("docker", "network", "create", "--label", f"{CLUSTER_LABEL}={self.name}", self.name)
        for node in self.nodes:
            run("docker", "run", "-d", "--init", *NODE_SECURITY, "--name", node,
                "--hostname", node, "--label", f"{CLUSTER_LABEL}={self.name}",
                "--network", self.name, NODE_IMAGE,
                f"--host=tcp://0.0.0.0:{DOCKERD_PORT}", f"--default-address-pool=base={LOCAL_POOL},size=24",
                "--bip=10.199.0.1/24")
        for node in self.nodes:
            self.ips[node] = run("docker", "inspect", "-f",
                                 f'{{{{(index .NetworkSettings.Networks "{self.name}").IPAddress}}}}',
                                 node).stdout.strip()
        for node in self.nodes:
            self._wait_dockerd(node)
        manager = self.nodes[0]
        self.docker(manager, "swarm", "init", "--advertise-addr", self.ips[manager],
                    "--default-addr-pool", OVERLAY_POOL)
        token = self.docker(manager, "swarm", "join-token", "-q", "worker").stdout.strip()
        for node in self.nodes[1:]:
            self.docker(node, "swarm", "join", "--token", token, f"{self.ips[manager]}:2377")
        self.wait(lambda: len(self.ready_nodes()) == self.count, 60, "every node Ready")

    def _wait_dockerd(self, node: str, deadline: float = 60) -> None:
        end = time.monotonic() + deadline
        while self.docker(node, "info", check=False, timeout=10).returncode != 0:
            state = run("docker", "inspect", "-f", "{{.State.Status}}", node, check=False)
            if state.stdout.strip() != "running":
                logs = run("docker", "logs", "--tail", "20", node, check=False)
                raise ClusterError(f"node {node} exited before its dockerd answered: "
                                   f"{(logs.stderr + logs.stdout).strip()[-1500:]}")
            if time.monotonic() > end:
                raise ClusterError(f"dockerd of {node} did not answer within {deadline}s")
            time.sleep(0.5)

    def load(self, *images: str) -> None:
        """Every node gets ``images``: one `docker save`, loaded into the nodes in parallel."""
        with tempfile.TemporaryDirectory(prefix="sgwm-") as tmp:
            tar = Path(tmp) / "images.tar"
            run("docker", "save", "-o", str(tar), *images, timeout=600)

            def load_into(node: str) -> None:
                with tar.open("rb") as f:
                    self.docker(node, "load", "-q", timeout=600, stdin=f)
            with ThreadPoolExecutor(len(self.nodes)) as pool:
                list(pool.map(load_into, self.nodes))

    def down(self) -> None:
        """Remove the nodes (with their volumes: all their Docker state) and the network."""
        ids = run("docker", "ps", "-aq", "--filter", f"label={CLUSTER_LABEL}={self.name}",
                  check=False).stdout.split()
        if ids:
            run("docker", "rm", "-f", "-v", *ids, check=False, timeout=120)
        run("docker", "network", "rm", self.name, check=False)

    # -- using ----------------------------------------------------------------------------

    @property
    def manager(self) -> str:
        return self.nodes[0]

    def docker(self, node: str, *args: str, timeout: float = 60, check: bool = True,
               stdin: Any = None) -> subprocess.CompletedProcess[str]:
        """The docker CLI against ``node``'s daemon (over the cluster's bridge network)."""
        return run("docker", "-H", f"tcp://{self.ips[node]}:{DOCKERD_PORT}", *args,
                   timeout=timeout, check=check, stdin=stdin)

    def ready_nodes(self) -> list[str]:
        out = self.docker(self.manager, "node", "ls", "--format", "{{.Hostname}} {{.Status}}",
                          check=False).stdout.split("\n")
        return [line.split()[0] for line in out if line.endswith(" Ready")]

    def tasks(self, service: str) -> list[dict[str, Any]]:
        """The service's tasks as `docker service ps` shows them (node, state, error)."""
        out = self.docker(self.manager, "service", "ps", service, "--no-trunc",
                          "--format", "{{json .}}", check=False).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def kill(self, node: str) -> None:
        """The node vanishes at once, as a machine losing power: no leave, no graceful stop."""
        run("docker", "kill", node)

    @staticmethod
    def wait(predicate: Any, deadline: float, what: str, interval: float = 0.5) -> None:
        end = time.monotonic() + deadline
        while not predicate():
            if time.monotonic() > end:
                raise ClusterError(f"timed out after {deadline}s waiting for {what}")
            time.sleep(interval)

    def overlay_problem(self, image: str) -> str | None:
        """None when a container on the manager reaches a task on every node over an overlay
        network; else exactly what failed. Replicas are reached by task address (dnsrr), as the
        swarm runtime does, so the kernel's IPVS (absent here) is not needed."""
        net, svc = f"{self.name}-probe", f"{self.name}-probe"
        try:
            made = self.docker(self.manager, "network", "create", "-d", "overlay", "--attachable",
                               net, check=False)
            if made.returncode != 0:
                return f"creating an overlay network failed: {made.stderr.strip()}"
            created = self.docker(self.manager, "service", "create", "-d", "--name", svc,
                                  "--mode", "global", "--network", net, "--endpoint-mode", "dnsrr",
                                  image, "python", "-m", "http.server", "8000", check=False)
            if created.returncode != 0:
                return f"creating a global service on the overlay failed: {created.stderr.strip()}"
            try:
                self.wait(lambda: sum(t["CurrentState"].startswith("Running")
                                      for t in self.tasks(svc)) >= self.count, 90,
                          f"a probe task running on each of {self.count} nodes")
            except ClusterError as exc:
                errors = {t["Node"]: t["Error"] for t in self.tasks(svc) if t["Error"]}
                return f"{exc}; task errors: {errors}"
            script = ("import socket, urllib.request\n"
                      "ips = sorted({a[4][0] for a in socket.getaddrinfo("
                      f"'tasks.{svc}', 8000, proto=socket.IPPROTO_TCP)}})\n"
                      "for ip in ips:\n"
                      "    try:\n"
                      "        urllib.request.urlopen(f'http://{ip}:8000/', timeout=5)\n"
                      "        print(ip, 'ok')\n"
                      "    except Exception as e:\n"
                      "        print(ip, 'FAILED', e)\n")
            probe = self.docker(self.manager, "run", "--rm", "--network", net, image,
                                "python", "-c", script, check=False, timeout=120)
            lines = probe.stdout.split("\n")
            if probe.returncode != 0 or sum(line.endswith(" ok") for line in lines) < self.count:
                return (f"a container on {self.manager} could not reach a task on every node over "
                        f"the overlay (vxlan): {probe.stdout.strip()} {probe.stderr.strip()}")
            return None
        finally:
            self.docker(self.manager, "service", "rm", svc, check=False)
            self.wait(lambda: self.docker(self.manager, "network", "rm", net,
                                          check=False).returncode == 0
                      or net not in self.docker(self.manager, "network", "ls", "--format",
                                                "{{.Name}}", check=False).stdout.split(),
                      30, f"network {net} removed")
