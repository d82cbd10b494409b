"""Admin API trust by default (no token configured): the gateway generates a token into a 0600
file in its state_dir that the CLI reads by itself, so no other local process (a model worker
included) can mutate without it; a Host allow-list keeps DNS-rebinding pages out; /healthz and
/readyz stay open for load balancers."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.admin import adminclient
from tests.helpers import GatewayProc, echo_service, run_cli


async def call(gw: GatewayProc, method: str, path: str,
               headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, \
            s.request(method, gw.admin(path), headers=headers or {}) as r:
        return r.status, await r.json(content_type=None)


async def test_generated_token_guards_mutations(tmp_path: Path) -> None:
    gw = GatewayProc(tmp_path, {"echo": echo_service(replicas=1)})
    token_file = gw.state_dir / "admin-token"
    async with gw:
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert gw.token and len(gw.token) >= 32

        # any local process without the token (a worker, a script) may read but not mutate
        assert (await call(gw, "GET", "/status"))[0] == 200
        for path, _body in (("/reload", None), ("/services/echo/scale", '{"replicas": 3}'),
                           ("/services/echo/traffic", '{"reset": true}')):
            status, doc = await call(gw, "POST", path)
            assert (status, doc["error"]) == (401, "unauthorized"), path
            assert str(token_file) in doc["detail"]          # says where the token is
        status, doc = await call(gw, "POST", "/reload", {"Authorization": "Bearer nope"})
        assert status == 401
        assert (await call(gw, "POST", "/reload", gw.auth))[0] == 200

        # the CLI finds the token by itself through -c (before or after the command)
        rc, out, err = await run_cli("reload", "-c", gw.config_path)
        assert rc == 0 and "no changes" in out, out + err
        rc, out, err = await run_cli("-c", gw.config_path, "scale", "echo", "2")
        assert rc == 0 and "desired 2" in out, out + err
        # --admin URL alone: the 401 says which variable to set
        rc, out, err = await run_cli("reload", "--admin", gw.admin(""),
                                     env={adminclient.TOKEN_ENV: ""})
        assert rc == 1 and "error 401 unauthorized" in err, out + err
        assert f"set ${adminclient.TOKEN_ENV}" in err
        rc, out, err = await run_cli("--admin", gw.admin(""), "reload",
                                     env={adminclient.TOKEN_ENV: gw.token or ""})
        assert rc == 0, out + err
    assert not token_file.exists()          # the token dies with the gateway


async def test_host_allow_list(tmp_path: Path) -> None:
    async with GatewayProc(tmp_path, {"echo": echo_service(replicas=1)}, ready=False) as gw:
        port = gw.admin_port
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "127.0.0.1"):
            assert (await call(gw, "GET", "/status", {"Host": host}))[0] == 200, host
        # a DNS-rebinding page names its own host: no /status (pids, log paths), no /metrics
        for path in ("/status", "/metrics", "/rollouts"):
            status, doc = await call(gw, "GET", path, {"Host": f"evil.example:{port}"})
            assert (status, doc["error"]) == (403, "forbidden_host"), path
            assert "gateway.admin.allow_hosts" in doc["detail"]
        status, _ = await call(gw, "POST", "/reload", {"Host": "evil.example", **gw.auth})
        assert status == 403
        # load balancers probe with whatever Host they like
        for path in ("/healthz", "/readyz"):
            status, _ = await call(gw, "GET", path, {"Host": "lb.internal"})
            assert status in (200, 503), path

        # a name the operator allows
        gw.config["gateway"]["admin"]["allow_hosts"] = ["localhost", "gw.internal"]
        gw.rewrite(gw.config)
        assert (await call(gw, "POST", "/reload", gw.auth))[0] == 200
        assert (await call(gw, "GET", "/status", {"Host": "gw.internal"}))[0] == 200
        assert (await call(gw, "GET", "/status", {"Host": "evil.example"}))[0] == 403


async def test_workers_do_not_inherit_the_admin_token(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SGW_TRUST_TEST_TOKEN", "configured-token")
    monkeypatch.setenv(adminclient.TOKEN_ENV, "cli-token")
    monkeypatch.setenv("SGW_TRUST_TEST_OTHER", "kept")
    gw = GatewayProc(tmp_path, {"echo": echo_service(replicas=1)})
    gw.config["gateway"]["admin"]["token_env"] = "SGW_TRUST_TEST_TOKEN"
    gw.rewrite(gw.config)
    async with gw:
        (pid,) = gw.worker_pids
        env = dict(item.split(b"=", 1) for item in
                   Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if b"=" in item)
        assert env[b"SGW_TRUST_TEST_OTHER"] == b"kept"
        assert b"SGW_TRUST_TEST_TOKEN" not in env
        assert adminclient.TOKEN_ENV.encode() not in env
