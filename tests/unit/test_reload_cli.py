"""The operator side without sockets: admin address / token discovery, admin bind rules,
status and reload rendering."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from gateway.admin import adminclient, render
from gateway.admin.server import AdminServer, is_loopback
from gateway.errors import ConfigError
from gateway.metrics import Metrics
from gateway.spec.models import AdminSpec


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "gw.yaml"
    p.write_text(text)
    return p


def test_admin_address_and_token_come_from_the_config(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_TOKEN", " s3cret\n")
    p = write(tmp_path, "gateway:\n  admin: {listen: '0.0.0.0:7001', token_env: MY_TOKEN}\n"
                        "services: {bad: 1}\n")      # invalid for the gateway; fine for us
    assert adminclient.from_config(p)[:2] == ("http://127.0.0.1:7001", "s3cret")
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    p = write(tmp_path, f"gateway:\n  admin: {{listen: '[::1]:7002', token_file: {token_file}}}\n")
    assert adminclient.from_config(p)[:2] == ("http://[::1]:7002", "from-file")
    monkeypatch.chdir(tmp_path)
    p = write(tmp_path, "services: {}\n")
    assert adminclient.from_config(p)[:2] == ("http://127.0.0.1:8081", None)
    # with no token configured, the one the gateway generated into its state_dir
    (tmp_path / "st").mkdir()
    (tmp_path / "st" / "admin-token").write_text("generated\n")
    p = write(tmp_path, "gateway: {state_dir: st}\n")
    _, token, hint = adminclient.from_config(p)
    assert token == "generated" and "st/admin-token" in hint


@pytest.mark.parametrize("text, message", [
    ("gateway: [unclosed\n", "is not valid YAML"),
    ("gateway:\n  admin: {listen: '127.0.0.1:0'}\n", "names no fixed port"),
    ("gateway:\n  admin: {token_env: SGW_UNSET_TOKEN_VAR}\n", "gateway.admin.token_env"),
])
def test_config_that_cannot_name_the_admin_api(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(adminclient.AdminClientError, match=message):
        adminclient.from_config(write(tmp_path, text))


def test_admin_flag_overrides_the_config_address(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(adminclient.TOKEN_ENV, "env-token")
    client = adminclient.from_args(argparse.Namespace(config=None, admin="127.0.0.1:9"))
    assert (client.url, client.token) == ("http://127.0.0.1:9", "env-token")
    p = write(tmp_path, "gateway:\n  admin: {listen: '127.0.0.1:7001'}\n")
    monkeypatch.chdir(tmp_path)
    client = adminclient.from_args(argparse.Namespace(config=str(p), admin="http://h:1/"))
    assert (client.url, client.token) == ("http://h:1", "env-token")   # no token file: $VAR


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("10.0.0.1", False), ("example.com", False)])
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_non_loopback_admin_needs_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    admin = AdminServer(dict, Metrics())
    with pytest.raises(ConfigError, match="refusing to serve the admin API on non-loopback"):
        admin.configure(AdminSpec(listen="0.0.0.0:8081"))
    monkeypatch.setenv("SGW_TEST_TOKEN", "t")
    admin.configure(AdminSpec(listen="0.0.0.0:8081", token_env="SGW_TEST_TOKEN"))
    admin.configure(AdminSpec(listen="127.0.0.1:8081"))
    with pytest.raises(ConfigError, match="gateway.admin.token_file: cannot read /nonexistent"):
        admin.configure(AdminSpec(token_file="/nonexistent/token"))


def test_mutating_routes_must_be_post() -> None:
    admin = AdminServer(dict, Metrics())

    async def handler(request: object) -> None:
        raise AssertionError

    with pytest.raises(ValueError, match="must be POST"):
        admin.add_route("GET", "/scale", handler, mutating=True)  # type: ignore[arg-type]


STATUS = {
    "config": {"path": "/etc/gw.yaml", "hash": "abc123", "loaded_at": 1000.0,
               "last_reload": {"ok": False, "at": 1030.0, "needs_restart": ["gateway.listen"]}},
    "runtime": "process", "listen": {"data": 8080, "admin": 8081},
    "services": {"echo": {"route": "/v1/echo", "weights": {"v1": 3, "v2": 1},
                          "versions": {
        "v1": {"ready": 2, "desired": 2, "restarts": 1, "waiting": 0, "replicas": [
            {"id": "r1", "address": "127.0.0.1:5001", "state": "ready", "inflight": 2,
             "revision": "rev1"},
            {"id": "r2", "address": "127.0.0.1:5002", "state": "ready", "inflight": 1,
             "revision": "rev1"}]},
        "v2": {"ready": 0, "desired": 1, "restarts": 0, "joining": True, "replicas": [
            {"id": "r3", "address": "127.0.0.1:5003", "state": "starting", "revision": "rev2"}]},
        "old": {"ready": 1, "desired": 0, "removed": True, "replicas": []}}}},
}


def test_status_renders_versions_and_replicas() -> None:
    text = render.render_status(STATUS, now=1060.0)
    lines = text.splitlines()
    assert lines[0] == ("config /etc/gw.yaml  hash abc123  loaded 1970-01-01 00:16:40Z (60s ago)"
                        "  runtime process")
    assert "last reload 30s ago: FAILED (old config kept)" in text
    assert "needs restart: gateway.listen" in text
    v1 = next(line for line in lines if " v1 " in line)
    assert v1.split() == ["echo", "/v1/echo", "v1", "3", "(75%)", "2", "2", "1", "3", "0"]
    assert "joining when ready" in next(line for line in lines if " v2 " in line)
    assert "removed, draining" in next(line for line in lines if " old " in line)
    assert any(line.split()[:5] == ["r3", "echo", "v2", "127.0.0.1:5003", "starting"]
               for line in lines)


def test_reload_renders_changes_and_failures() -> None:
    ok = {"ok": True, "config": "/gw.yaml", "previous_hash": "a", "hash": "b",
          "changes": ["version echo/v1: replicas 1 -> 2"], "notes": [],
          "needs_restart": ["gateway.listen"]}
    assert render.render_reload(ok).splitlines() == [
        "reloaded /gw.yaml: config a -> b", "  version echo/v1: replicas 1 -> 2",
        "  needs restart: gateway.listen"]
    bad = {"ok": False, "hash": "a", "detail": "invalid config /gw.yaml\n  x: unknown key (line 3)"}
    assert render.render_reload(bad).splitlines()[0] == "reload failed; still serving config a"
    assert adminclient.describe_error(401, {"error": "unauthorized", "service": None,
                                            "detail": "wrong token"}) == \
        "error 401 unauthorized: wrong token"
