"""spec/diff.py: what changed between two specs, and what waits for a restart."""

from __future__ import annotations

from typing import Any

from gateway.spec import Spec
from gateway.spec.diff import diff_specs, keep_restart_fields

CMD = "serve-gateway worker m:C --port {port}"


def spec(**gateway: Any) -> dict[str, Any]:
    return {"gateway": {"listen": "127.0.0.1:9000", **gateway}, "services": {
        "echo": {"route": "/v1/echo", "versions": {"v1": {"command": CMD, "replicas": 2}}},
        "mlp": {"route": "/v1/mlp", "traffic": {"weights": {"a": 1, "b": 0}},
                "versions": {"a": {"command": CMD}, "b": {"command": CMD}}},
    }}


def build(doc: dict[str, Any]) -> Spec:
    return Spec.model_validate(doc)


def test_identical_specs_have_an_empty_diff() -> None:
    d = diff_specs(build(spec()), build(spec()))
    assert d.empty and d.lines() == []


def test_services_and_versions_added_and_removed() -> None:
    old = spec()
    new = spec()
    del new["services"]["mlp"]
    new["services"]["new"] = {"route": "/n", "versions": {"x": {"command": CMD}}}
    new["services"]["echo"]["versions"]["v2"] = {"command": CMD}
    new["services"]["echo"]["traffic"] = {"weights": {"v1": 1, "v2": 1}}
    d = diff_specs(build(old), build(new))
    assert d.services_added == ("new",)
    assert d.services_removed == ("mlp",)
    assert set(d.versions_added) == {("new", "x"), ("echo", "v2")}
    assert set(d.versions_removed) == {("mlp", "a"), ("mlp", "b")}
    assert d.services_changed == {"echo": ("traffic",)}
    assert "version echo/v2 added" in d.lines() and "service mlp removed" in d.lines()


def test_route_weights_timeouts_and_replicas_apply_without_new_replicas() -> None:
    new = spec()
    echo = new["services"]["echo"]
    echo["route"] = "/v2/echo"
    echo["timeouts"] = {"request": "5s"}
    echo["versions"]["v1"]["replicas"] = 3
    echo["versions"]["v1"]["health"] = {"interval": "1s"}
    new["services"]["mlp"]["traffic"]["weights"] = {"a": 1, "b": 1}
    d = diff_specs(build(spec()), build(new))
    assert d.services_changed == {"echo": ("route", "timeouts"), "mlp": ("traffic",)}
    assert d.replicas == {("echo", "v1"): (2, 3)}
    assert d.versions_changed == {("echo", "v1"): ("health",)}
    assert d.versions_replaced == ()
    assert d.as_dict()["replicas"] == {"echo/v1": {"old": 2, "new": 3}}


def test_a_new_command_or_env_replaces_replicas() -> None:
    new = spec()
    new["services"]["echo"]["versions"]["v1"]["env"] = {"A": "1"}
    new["services"]["mlp"]["versions"]["a"]["command"] = CMD + " --threads 2"
    d = diff_specs(build(spec()), build(new))
    assert set(d.versions_replaced) == {("echo", "v1"), ("mlp", "a")}
    assert d.versions_changed == {}        # the revision covers env and command


def test_listen_runtime_state_dir_instance_need_a_restart_the_rest_applies() -> None:
    new = spec(listen="127.0.0.1:9001", state_dir="/elsewhere", instance="other",
               admin={"listen": "127.0.0.1:9002", "allow_origins": ["https://ops"]},
               drain_timeout="3s", access_log={"enabled": True})
    d = diff_specs(build(spec()), build(new))
    assert set(d.needs_restart) == {"gateway.listen", "gateway.state_dir", "gateway.instance",
                                    "gateway.admin.listen"}
    assert set(d.gateway_changed) == {"gateway.admin.allow_origins", "gateway.drain_timeout",
                                      "gateway.access_log"}
    assert "gateway.listen changed: needs a restart" in d.lines()


def test_keep_restart_fields_holds_running_values_and_takes_the_rest() -> None:
    running = build(spec())
    new = build(spec(listen="127.0.0.1:9001", runtime="docker", drain_timeout="3s",
                     admin={"listen": "127.0.0.1:9002", "token_env": "T"}))
    effective = keep_restart_fields(running, new)
    g = effective.gateway
    assert (g.listen, g.runtime) == ("127.0.0.1:9000", "process")
    assert g.admin.listen == running.gateway.admin.listen
    assert g.drain_timeout == 3.0 and g.admin.token_env == "T"
    assert effective.services == new.services
    # reloading the same file again still reports the pending restart, and nothing else
    again = diff_specs(effective, new)
    assert set(again.needs_restart) == {"gateway.listen", "gateway.runtime", "gateway.admin.listen"}
    assert not again.gateway_changed and not again.services_changed
