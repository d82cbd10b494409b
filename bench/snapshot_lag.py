"""How long a committed change takes to be in force in every data-plane process
(``gateway.workers`` >= 2): live weight changes through the admin API, each followed by polls
of ``/status`` until every process reports the controller's new snapshot version.

    .venv/bin/python bench/snapshot_lag.py [--workers 2] [--changes 50]

The figure is an upper bound: from the admin call's return to the first ``/status`` poll (every
2 ms) that shows every process on the new version, so it includes the process's report (sent
at once after an apply) and the poll. The issue's target: within 100 ms.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from statistics import median

from procs import ProcSet
from targets import REPO, backend_argv, start_gateway


def call(url: str, body: dict | None = None, token: str | None = None) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json",
                                          **({"Authorization": f"Bearer {token}"} if token else {})})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read() or b"{}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--changes", type=int, default=50)
    args = p.parse_args()
    backend = backend_argv("{port}")
    services = {"bench": {"route": "/", "traffic": {"weights": {"v1": 100, "v2": 0}}, "versions": {
        v: {"command": backend, "replicas": 1, "health": {"path": "/ready"}} for v in ("v1", "v2")}}}
    tmp = Path(tempfile.mkdtemp(prefix="serve-gateway-lag-"))
    lags = []
    try:
        with ProcSet(tmp, pid_dirs=[tmp]) as procs:
            target = start_gateway(procs, tmp, services, workers=args.workers)
            config = json.loads((tmp / "gateway.yaml").read_text())
            admin = "http://" + config["gateway"]["admin"]["listen"]
            token = (Path(config["gateway"]["state_dir"]) / "admin-token").read_text().strip()
            for i in range(args.changes):
                w = 100 - (i % 2) * 100
                call(f"{admin}/services/bench/traffic", {"weights": {"v1": w, "v2": 100 - w}},
                     token)
                returned = time.monotonic()
                while True:
                    doc = call(f"{admin}/status")
                    if all(d["snapshot"] == doc["snapshot"] for d in doc["dataplanes"]):
                        break
                    if time.monotonic() - returned > 5:
                        raise SystemExit(f"change {i}: not applied everywhere after 5 s: {doc}")
                    time.sleep(0.002)
                lags.append(time.monotonic() - returned)
            assert target.proc.alive()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lags.sort()
    print(f"workers {args.workers}, {len(lags)} weight changes: change in force in every "
          f"process after p50 {median(lags) * 1000:.1f} ms, p90 {lags[int(len(lags) * 0.9)] * 1000:.1f} ms, "
          f"max {lags[-1] * 1000:.1f} ms (upper bound: includes the report and the /status poll)")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
