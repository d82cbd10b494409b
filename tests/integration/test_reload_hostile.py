"""Files that used to stop the gateway (issue #14, items 1-2): through SIGHUP, POST /reload and
`serve-gateway reload` each is applied in full (merge keys) or refused with a message naming a
path, and the gateway keeps serving with the same replicas."""

from __future__ import annotations

import signal
from pathlib import Path

import aiohttp

from tests.helpers import GatewayProc, echo_service, run_cli, wait_until
from tests.integration.test_reload import predict, reloads

DEEP = "[" * 3000 + "]" * 3000
BOMB = "\n".join(['x-a: &a ["x","x","x","x","x","x","x","x","x","x"]'] + [
    f"x-{n}: &{n} [" + ",".join([f"*{p}"] * 10) + "]" for p, n in zip("abcdef", "bcdefg")])


def hostile(good: str) -> list[tuple[str, str]]:
    """(file text, the problem the refusal names)"""
    return [
        ("", "the file is empty"),
        (good.split("services:")[0], "services: no services"),            # truncated
        (good + f"x-deep: {DEEP}\n", "nested more than 64 levels deep"),
        (good.replace("replicas: 1", "replicas: 123456789012345678901"),
         "services.echo.versions.v1.replicas: integer too large"),
        (BOMB + "\n" + good.replace("replicas: 1", "replicas: 1\n        env: {B: *g}"),
         "aliases expand to more than"),
        (good.replace("replicas: 1", "replicas: 500"), "must be <= 100"),
    ]


async def test_hostile_files_are_refused_and_the_gateway_keeps_serving(tmp_path: Path) -> None:
    async with GatewayProc(tmp_path, {"echo": echo_service(replicas=1)}) as gw, \
            aiohttp.ClientSession() as s:
        good = gw.config_path.read_text()
        running = (await gw.status())["config"]["hash"]
        pids = set(gw.worker_pids)
        failures = 0
        for text, problem in hostile(good):
            gw.config_path.write_text(text)
            assert gw.proc is not None
            gw.proc.send_signal(signal.SIGHUP)
            failures += 1

            async def counted(n: int = failures) -> bool:
                return await reloads(gw, "failure") == n
            await wait_until(counted, 20, what=f"the SIGHUP refusal of {problem!r}")
            async with s.post(gw.admin("/reload"), headers=gw.auth) as r:
                doc = await r.json()
                assert r.status == 422, doc                    # a refusal, never a 500
            failures += 1
            assert problem in doc["detail"] and "internal error" not in doc["detail"], doc
            rc, out, err = await run_cli("reload", "--admin", gw.admin(""))
            failures += 1
            assert rc == 1 and problem in err and "Traceback" not in err, out + err
            assert gw.proc.poll() is None, gw.log()
            assert (await predict(s, gw.url("/v1/echo")))[0] == 200
            doc = await gw.status()
            assert doc["config"]["hash"] == running
            assert {r["pid"] for r in doc["services"]["echo"]["versions"]["v1"]["replicas"]} == pids
        assert "Traceback" not in gw.log()
        # a merge key is applied in full: the service moves to the merged route
        gw.config_path.write_text("x-echo: &echo\n  route: /v2/echo\n" + good.replace(
            "    route: /v1/echo\n", "    <<: *echo\n"))
        rc, out, err = await run_cli("reload", "-c", gw.config_path)
        assert rc == 0, out + err
        assert (await predict(s, gw.url("/v2/echo")))[0] == 200


async def test_validate_names_the_problem_of_each_hostile_file(tmp_path: Path) -> None:
    good = GatewayProc(tmp_path, {"echo": echo_service(replicas=1)}).config_path.read_text()
    merge = "x-d: &d {route: /v1/echo, timeouts: {request: 0}}\n" + good.replace(
        "    route: /v1/echo\n", "    <<: *d\n")
    for n, (text, problem) in enumerate(hostile(good) + [
            (merge, "services.echo.timeouts.request: must be > 0 (line 1)")]):
        path = tmp_path / f"hostile{n}.yaml"
        path.write_text(text)
        rc, out, err = await run_cli("validate", path)
        assert rc == 1 and problem in err and "Traceback" not in err, out + err


async def test_up_refuses_a_config_without_services(tmp_path: Path) -> None:
    config = tmp_path / "empty.yaml"
    config.write_text(f"gateway: {{state_dir: {tmp_path / 'state'}}}\n")
    rc, out, err = await run_cli("up", config)
    assert rc == 1 and "services: no services" in err and "Traceback" not in err, out + err
    config.write_text(f"gateway: {{state_dir: {tmp_path / 'state'}}}\nservices: {{}}\n")
    rc, out, err = await run_cli("validate", config)
    assert rc == 1 and "gateway.allow_empty" in err
