"""The admin API on its own listener: token, POST-only mutations, Origin check, loopback-only
without a token, and `serve-gateway status`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from gateway.admin import adminclient
from tests.helpers import GatewayProc, echo_service, free_port, run_cli

TOKEN_ENV = "SGW_TEST_ADMIN_TOKEN"
OPS = "https://ops.example"


async def call(gw: GatewayProc, method: str, path: str, token: str | None = None,
               origin: str | None = None) -> tuple[int, Any, Any]:
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if origin is not None:
        headers["Origin"] = origin
    async with aiohttp.ClientSession() as s, \
            s.request(method, gw.admin(path), headers=headers) as r:
        return r.status, await r.json(content_type=None), r.headers


async def test_token_methods_and_origins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, "right-token")
    gw = GatewayProc(tmp_path, {"echo": echo_service(replicas=1)})
    gw.config["gateway"]["admin"].update(token_env=TOKEN_ENV, allow_origins=[OPS])
    gw.rewrite(gw.config)
    async with gw:
        # reads stay open (Prometheus, probes)
        assert (await call(gw, "GET", "/healthz"))[:2] == (200, {"status": "ok"})
        assert (await call(gw, "GET", "/readyz"))[:2] == (200, {"ready": True, "not_ready": []})
        assert (await call(gw, "GET", "/status"))[0] == 200

        # a mutation needs the token
        status, doc, headers = await call(gw, "POST", "/reload")
        assert status == 401 and headers["WWW-Authenticate"] == "Bearer"
        assert doc == {"error": "unauthorized", "service": None,
                       "detail": "this endpoint needs 'Authorization: Bearer <token>'; the "
                                 f"token is in ${TOKEN_ENV}"}
        status, doc, _ = await call(gw, "POST", "/reload", token="wrong-token")
        assert (status, doc["error"]) == (401, "unauthorized")
        assert doc["detail"].startswith("wrong token")
        status, doc, _ = await call(gw, "POST", "/reload", token="right-token")
        assert status == 200 and doc["ok"]

        # mutations are POST only
        status, doc, headers = await call(gw, "GET", "/reload", token="right-token")
        assert (status, doc["error"], doc["service"]) == (405, "method_not_allowed", None)
        assert "POST" in headers["Allow"]

        # a browser page from elsewhere is refused, reads included
        for method, path in (("GET", "/status"), ("POST", "/reload")):
            status, doc, _ = await call(gw, method, path, token="right-token",
                                        origin="https://evil.example")
            assert (status, doc["error"]) == (403, "forbidden_origin"), (method, path)
        assert (await call(gw, "POST", "/reload", token="right-token", origin=OPS))[0] == 200
        status, doc, _ = await call(gw, "GET", "/nowhere")
        assert (status, doc["error"]) == (404, "not_found")

        # the data listener never serves the admin API
        async with aiohttp.ClientSession() as s:
            for path in ("/status", "/reload", "/metrics", "/healthz"):
                auth = {"Authorization": "Bearer right-token"}
                async with s.post(gw.url(path), headers=auth) as r:
                    assert r.status == 404 and (await r.json())["error"] == "no_route", path

        # the CLI finds the token through the config; without it the API says no
        rc, out, err = await run_cli("reload", "-c", gw.config_path)
        assert rc == 0 and "no changes" in out, out + err
        rc, out, err = await run_cli("reload", "--admin", gw.admin(""),
                                     env={adminclient.TOKEN_ENV: ""})
        assert rc == 1 and "error 401 unauthorized" in err, out + err

        # the token is re-read on reload: switch to a token file
        token_file = tmp_path / "admin-token"
        token_file.write_text("file-token\n")
        gw.config["gateway"]["admin"] = {"listen": gw.config["gateway"]["admin"]["listen"],
                                         "token_file": str(token_file)}
        gw.rewrite(gw.config)
        assert (await call(gw, "POST", "/reload", token="right-token"))[0] == 200
        assert (await call(gw, "POST", "/reload", token="right-token"))[0] == 401
        assert (await call(gw, "POST", "/reload", token="file-token"))[0] == 200
        # a token file that cannot be read keeps the old token (the reload fails whole)
        token_file.unlink()
        status, doc, _ = await call(gw, "POST", "/reload", token="file-token")
        assert status == 422 and "gateway.admin.token_file: cannot read" in doc["detail"]
        assert (await call(gw, "POST", "/reload", token="file-token"))[0] == 422   # still auth'd


async def test_non_loopback_admin_without_token_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = {"gateway": {"listen": f"127.0.0.1:{free_port()}",
                          "admin": {"listen": f"0.0.0.0:{free_port()}"}, "state_dir": str(state)},
              "services": {"echo": echo_service(replicas=1)}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    rc, out, err = await run_cli("up", path, timeout=30)
    assert rc == 1, out + err
    assert "gateway.admin.listen: refusing to serve the admin API on non-loopback address" in err
    assert "token_env" in err
    assert not (state / "logs").exists()     # refused before any worker started


async def test_status_command(tmp_path: Path) -> None:
    services = {"echo": echo_service(replicas=2), "other": echo_service("/v1/other", replicas=1)}
    async with GatewayProc(tmp_path, services) as gw:
        doc = await gw.status()
        rc, out, err = await run_cli("status", "-c", gw.config_path)
        assert rc == 0, err
        lines = out.splitlines()
        assert lines[0].startswith(f"config {gw.config_path}  hash {doc['config']['hash']}")
        assert lines[2].split() == ["SERVICE", "ROUTE", "VERSION", "WEIGHT", "READY", "DESIRED",
                                    "RESTARTS", "INFLIGHT", "WAITING", "NOTE"]
        rows = {tuple(line.split()[:3]): line.split()[3:] for line in lines[3:6]}
        assert rows[("echo", "/v1/echo", "v1")][:4] == ["1", "(100%)", "2", "2"]
        assert rows[("other", "/v1/other", "v1")][:4] == ["1", "(100%)", "1", "1"]
        for svc in ("echo", "other"):
            for rep in doc["services"][svc]["versions"]["v1"]["replicas"]:
                row = next(line.split() for line in lines if line.startswith(rep["id"]))
                assert row[:5] == [rep["id"], svc, "v1", rep["address"], "ready"]

        rc, out, err = await run_cli("status", "--admin", gw.admin(""), "--json")
        assert rc == 0, err
        raw = json.loads(out)
        assert raw["services"].keys() == {"echo", "other"}
        assert raw["config"]["hash"] == doc["config"]["hash"]

    rc, out, err = await run_cli("status", "--admin", f"http://127.0.0.1:{free_port()}")
    assert rc == 1 and "cannot reach the admin API" in err
