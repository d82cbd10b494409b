"""Observed.of_revision: a rollout counts only replicas of the revision its config runs."""

from __future__ import annotations

from gateway.control.groups import Managed, replica_spec
from gateway.control.reconcile import READY, STARTING
from gateway.control.supervisor import Supervisor
from gateway.metrics import Metrics
from gateway.runtimes.base import Replica
from gateway.spec import parse_spec

CONFIG = """\
services:
  echo:
    route: /v1/echo
    versions:
      v1: {command: "w --port {port}", env: {TAG: %s}, replicas: 2}
"""


def test_old_revision_replicas_do_not_count_for_the_new_one() -> None:
    sup = Supervisor(None, Metrics())  # type: ignore[arg-type]
    old_spec, new_spec = parse_spec(CONFIG % "old"), parse_spec(CONFIG % "new")
    sup.apply(old_spec)                # the supervisor still runs the old config
    g = sup.groups[("echo", "v1")]
    for i, state in enumerate((READY, READY, STARTING)):
        rs = replica_spec("echo", "v1", g.spec)
        g.members.append(Managed(Replica(f"r{i}", rs, "127.0.0.1", 1, 0.0), g, state=state))
    g.launching = 1
    old = old_spec.services["echo"].versions["v1"].revision()
    new = new_spec.services["echo"].versions["v1"].revision()
    seen = sup.observe("echo", "v1")
    assert seen is not None and seen.ready == 2
    assert seen.of_revision(old) == (2, 2)
    # the reload's first plan, before the supervisor applied the new config: nothing ready
    assert seen.of_revision(new) == (0, 0)
