"""/readyz's rule (admin.unready_services): a service is ready when it can serve or buffer."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.admin.server import unready_services


def version(ready: int = 0, autoscale: dict[str, Any] | None = None,
            crash_loop: bool = False) -> dict[str, Any]:
    return {"ready": ready, "desired": ready, "crash_loop": crash_loop, "autoscale": autoscale}


TO_ZERO = {"enabled": True, "pinned": None, "min_replicas": 0}


@pytest.mark.parametrize(("case", "versions", "ready"), [
    ("a ready replica", {"v1": version(1)}, True),
    ("scaled to zero: a request waits while one starts", {"v1": version(0, TO_ZERO)}, True),
    ("one version ready is enough", {"v1": version(0), "v2": version(2)}, True),
    ("no replica, not autoscaled", {"v1": version(0)}, False),
    ("autoscaled but min_replicas 1, none ready yet",
     {"v1": version(0, {**TO_ZERO, "min_replicas": 1})}, False),
    ("pinned to 0 by an operator", {"v1": version(0, {**TO_ZERO, "pinned": 0})}, False),
    ("scale to zero that crash-loops", {"v1": version(0, TO_ZERO, crash_loop=True)}, False),
])
def test_ready_means_can_serve_or_buffer(case: str, versions: dict[str, Any], ready: bool) -> None:
    status = {"services": {"echo": {"versions": versions}, "ok": {"versions": {"v1": version(1)}}}}
    assert unready_services(status) == ([] if ready else ["echo"]), case
