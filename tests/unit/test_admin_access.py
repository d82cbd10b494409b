"""The admin API's access rules as a pure function (``admin.Access.check``): who may read, who
may mutate, which Host names are accepted, on loopback and non-loopback listeners."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from gateway.admin.server import Access, access_for, host_name, write_token
from gateway.errors import ConfigError
from gateway.spec.models import AdminSpec

TOKEN = "t0ken"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def kind(access: Access, method: str, path: str, headers: dict[str, str] | None = None,
         mutating: bool = False) -> str | None:
    refused = access.check(method, path, headers or {}, mutating)
    return None if refused is None else refused.kind


def test_loopback_default_reads_open_mutations_need_the_generated_token() -> None:
    a = access_for(AdminSpec(), None, TOKEN, "/srv/state/admin-token")
    assert kind(a, "GET", "/status") is None
    assert kind(a, "GET", "/metrics") is None
    assert kind(a, "POST", "/reload", mutating=True) == "unauthorized"
    refused = a.check("POST", "/reload", {}, True)
    assert refused is not None and "/srv/state/admin-token" in refused.detail
    assert kind(a, "POST", "/reload", {"Authorization": "Bearer other"}, True) == "unauthorized"
    assert kind(a, "POST", "/reload", BEARER, True) is None


def test_non_loopback_reads_need_the_token_unless_public(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SGW_T", TOKEN)
    spec = AdminSpec(listen="0.0.0.0:8081", token_env="SGW_T")
    a = access_for(spec, TOKEN, "generated", "unused")
    for path in ("/status", "/metrics", "/rollouts/echo"):
        assert kind(a, "GET", path) == "unauthorized", path
        assert kind(a, "GET", path, BEARER) is None, path
    for path in ("/healthz", "/readyz"):       # load balancers carry no token
        assert kind(a, "GET", path) is None
    refused = a.check("GET", "/status", {}, False)
    assert refused is not None and "$SGW_T" in refused.detail   # which variable holds it
    opened = access_for(spec.model_copy(update={"public": ("metrics",)}), TOKEN, "g", "unused")
    assert kind(opened, "GET", "/metrics") is None
    assert kind(opened, "GET", "/status") == "unauthorized"
    assert kind(opened, "POST", "/metrics-not-really", mutating=True) == "unauthorized"


def test_non_loopback_without_a_token_is_refused() -> None:
    with pytest.raises(ConfigError, match="refusing to serve the admin API on non-loopback"):
        access_for(AdminSpec(listen="0.0.0.0:8081"), None, "generated", "unused")


@pytest.mark.parametrize("host, allowed", [
    ("localhost:8081", True), ("LOCALHOST", True), ("127.0.0.1:8081", True), ("[::1]:8081", True),
    ("10.1.2.3", True), ("", True),               # IP literals cannot be a rebound name
    ("evil.example:8081", False), ("localhost.evil.example", False), ("gateway:8081", False)])
def test_host_allow_list(host: str, allowed: bool) -> None:
    a = access_for(AdminSpec(), None, TOKEN, "unused")
    headers = {"Host": host} if host else {}
    assert kind(a, "GET", "/status", headers) == (None if allowed else "forbidden_host")
    assert kind(a, "GET", "/healthz", headers) is None      # always open


def test_allowed_names_the_listen_name_and_star() -> None:
    a = access_for(AdminSpec(allow_hosts=("gateway",)), None, TOKEN, "unused")
    assert kind(a, "GET", "/status", {"Host": "gateway:8081"}) is None
    assert kind(a, "GET", "/status", {"Host": "localhost"}) == "forbidden_host"
    a = access_for(AdminSpec(listen="localhost:8081", allow_hosts=()), None, TOKEN, "unused")
    assert kind(a, "GET", "/status", {"Host": "localhost:8081"}) is None
    a = access_for(AdminSpec(allow_hosts=("*",)), None, TOKEN, "unused")
    assert kind(a, "GET", "/status", {"Host": "anything.example"}) is None


def test_host_name() -> None:
    assert [host_name(h) for h in ("a:1", "a", "[::1]:80", "[::1]", "::1")] == \
        ["a", "a", "::1", "::1", "::1"]


def test_token_file_is_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "state" / "admin-token"
    path.parent.mkdir()
    path.write_text("old")
    os.chmod(path, 0o644)                  # a wider file left behind is replaced, not reused
    write_token(path, TOKEN)
    assert path.read_text() == TOKEN + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
