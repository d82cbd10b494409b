"""Config fuzz, second half (issue #14, item 4): a few seeded mutants of config/*.yaml that
validate also start and stop cleanly (process runtime, loopback ports, bounded time)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from gateway.errors import ConfigError
from gateway.spec import Spec, parse_spec
from gateway.spec.loader import load_yaml
from tests.fuzzconfig import mutants
from tests.helpers import REPO_ROOT, free_port, kill_group, wait_http_ok

STARTS = 3


def small(spec: Spec) -> bool:
    """Cheap enough to start here: process runtime, a handful of replicas, no GPU (the host
    may have none, and a plan needing GPUs it lacks is refused at start, as it should be)."""
    versions = [(s, v) for s in spec.services.values() for v in s.versions.values()]
    scale = [a.max_replicas for s, _ in versions for a in (s.autoscale,) if a] + \
        [v.autoscale.max_replicas for _, v in versions if v.autoscale]
    return spec.gateway.runtime == "process" and sum(v.replicas for _, v in versions) <= 4 \
        and all(n <= 4 for n in scale) and not any(v.resources.gpus for _, v in versions)


def startable(tmp_path: Path) -> list[tuple[str, dict]]:
    out = []
    for name, text in mutants(per_file=40, seed=7):
        try:
            spec = parse_spec(text, name)
        except ConfigError:
            continue
        if name.split("#")[0] != "broken.yaml" and small(spec):
            data = load_yaml(text)[0]          # as the gateway reads it: merged, no x- keys
            gw = data.setdefault("gateway", {})
            gw.update(listen=f"127.0.0.1:{free_port()}", state_dir=str(tmp_path / name),
                      admin={**(gw.get("admin") or {}), "listen": f"127.0.0.1:{free_port()}"})
            out.append((name, data))
    return out[::max(1, len(out) // STARTS)][:STARTS]


async def test_mutants_that_validate_start_and_stop_cleanly(tmp_path: Path) -> None:
    chosen = startable(tmp_path)
    assert len(chosen) == STARTS
    exe = str(Path(sys.executable).with_name("serve-gateway"))
    for name, data in chosen:
        config, log = tmp_path / "config.yaml", tmp_path / "gateway.log"
        config.write_text(yaml.safe_dump(data, sort_keys=False))
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(exe, "up", str(config), cwd=REPO_ROOT,
                                                        stdout=out, stderr=subprocess.STDOUT,
                                                        start_new_session=True)
        try:
            admin = data["gateway"]["admin"]["listen"]
            await wait_http_ok(f"http://{admin}/healthz", 20)
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.wait(), 45)
            text = log.read_text(errors="replace")
            assert code == 0 and "Traceback" not in text, f"{name}:\n{text}"
        finally:
            kill_group(proc.pid)
            await proc.wait()
