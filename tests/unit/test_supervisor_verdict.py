"""The supervisor's "no replica is coming" verdict, which lets a request get its 503 at once."""

from gateway.control.groups import CRASH_LOOP, Group
from gateway.dataplane.balance import ReplicaSet
from gateway.spec.models import VersionSpec


def group(desired: int = 1) -> Group:
    v = VersionSpec(command=["worker", "{port}"], replicas=desired)
    return Group("s", "v1", v, ReplicaSet("s", "v1"), desired, 2.0)


def test_a_launch_under_way_or_due_may_still_serve() -> None:
    g = group()
    assert g.hopeless() is None            # one is due (after its backoff)
    g.launching = 1
    assert g.hopeless() is None


def test_a_crash_loop_is_hopeless_even_with_a_restart_due() -> None:
    g = group()
    g.crashes.extend([1.0] * CRASH_LOOP)
    g.last_exit = "exited with code 3"
    reason = g.hopeless()
    assert reason is not None and "crash loop" in reason and "code 3" in reason


def test_nothing_wanted_is_hopeless_unless_an_autoscaler_follows_the_version() -> None:
    g = group(desired=0)
    assert g.hopeless() == "no replica is starting"
    g.replica_set.starting = g.starting      # what the autoscaler sets on versions it scales
    assert g.hopeless() is None
