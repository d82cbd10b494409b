"""Start the systems under test: the direct backend, nginx proxy_pass, the naive aiohttp proxy
and serve-gateway, each as its own process group registered with a ``ProcSet``."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from procs import Proc, ProcSet, children_running, cpu_seconds, free_port, group_pids, wait_http_ok

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
BACKEND_SH = BENCH_DIR / "backend.sh"
GATEWAY_BIN = REPO / ".venv" / "bin" / "serve-gateway"
DATAPLANE_MARK = "gateway.dataplane.child"     # in a data-plane process's command line


@dataclass(frozen=True)
class Target:
    """A started system under test, reachable at http://127.0.0.1:port/."""

    key: str
    port: int
    proc: Proc
    # nginx: count the master and its workers. The gateway: its own process only, not the
    # backend replicas it launched (those are the same work as "direct").
    whole_group: bool = False
    # the gateway with gateway.workers >= 2: its data-plane processes count too (it is their
    # work), its replicas still do not
    dataplanes: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def pids(self) -> list[int]:
        if self.whole_group:
            return group_pids(self.proc.pid)
        if self.dataplanes:
            return [self.proc.pid, *children_running(self.proc.pid, DATAPLANE_MARK)]
        return [self.proc.pid]

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pids())


def backend_argv(port: str | int) -> list[str]:
    """The backend command; the gateway's worker command is the same with "{port}"."""
    return ["bash", str(BACKEND_SH), str(port)]


def bench_env(tmp: Path) -> dict[str, str]:
    """Environment of everything we start: backends put their nginx dirs under tmp."""
    return {**os.environ, "BENCH_TMPDIR": str(tmp)}


def start_direct(procs: ProcSet, tmp: Path) -> Target:
    port = free_port()
    proc = procs.start("direct", backend_argv(port), env=bench_env(tmp))
    wait_http_ok(proc, port, "/ready", timeout=10)
    return Target("direct", port, proc, whole_group=True)


_NGINX_PROXY_CONF = """\
worker_processes 1;
worker_rlimit_nofile 16384;
pid {dir}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    upstream backend {{
        server 127.0.0.1:{upstream};
        keepalive 64;
        keepalive_requests 10000000;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def start_nginx_proxy(procs: ProcSet, tmp: Path, upstream: int) -> Target:
    port = free_port()
    conf_dir = tmp / f"nginx-proxy-{port}"
    conf_dir.mkdir()
    conf_dir.chmod(0o755)  # workers run unprivileged when the master is root
    conf = conf_dir / "nginx.conf"
    conf.write_text(_NGINX_PROXY_CONF.format(dir=conf_dir, port=port, upstream=upstream))
    proc = procs.start("nginx", ["nginx", "-p", str(conf_dir), "-e", "stderr", "-c", str(conf),
                                 "-g", "daemon off;"])
    wait_http_ok(proc, port, "/ready", timeout=10)
    return Target("nginx", port, proc, whole_group=True)


def start_naive(procs: ProcSet, upstream: int) -> Target:
    port = free_port()
    proc = procs.start("naive", [sys.executable, str(BENCH_DIR / "naive_proxy.py"),
                                 "--port", str(port), "--upstream", f"http://127.0.0.1:{upstream}"])
    wait_http_ok(proc, port, "/ready", timeout=15)
    return Target("naive", port, proc)


def gateway_config(tmp: Path, services: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """A complete gateway config on free loopback ports; returns (config, data port)."""
    port, admin = free_port(), free_port()
    config = {
        "gateway": {
            "listen": f"127.0.0.1:{port}",
            "admin": {"listen": f"127.0.0.1:{admin}"},
            "state_dir": str(tmp / "gateway-state"),
            # Bounded shutdown: the bench must never hang on a slow drain.
            "drain_timeout": 2,
            "stop_grace": 2,
        },
        "services": services,
    }
    return config, port


def start_gateway(procs: ProcSet, tmp: Path, services: dict[str, Any],
                  binary: Path = GATEWAY_BIN, ready_timeout: float = 60.0,
                  workers: int = 1, name: str = "gateway") -> Target:
    """`serve-gateway up` on a config in tmp; ready once the data port answers 200.
    ``workers`` > 1: that many data-plane processes (a build before them has no such key)."""
    config, port = gateway_config(tmp, services)
    if workers > 1:
        config["gateway"]["workers"] = workers
    path = tmp / "gateway.yaml"
    # JSON is YAML: no YAML writer needed.
    path.write_text(json.dumps(config, indent=2))
    proc = procs.start(name, [str(binary), "up", str(path)], env=bench_env(tmp),
                       cwd=REPO, grace=10.0)
    wait_http_ok(proc, port, "/", timeout=ready_timeout)
    return Target("gateway", port, proc, dataplanes=workers > 1)
