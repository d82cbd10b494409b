"""One gateway per state_dir and instance: a second `serve-gateway up` on the same state is
refused with the holder's pid, before it touches anything, so the first gateway's workers keep
serving (on main it killed them on its way to failing to bind)."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import GatewayProc, Load, alive, echo_service, run_cli


async def test_second_up_on_the_same_state_is_refused_and_harms_nothing(tmp_path: Path) -> None:
    async with GatewayProc(tmp_path, {"echo": echo_service(replicas=2)}) as gw:
        assert gw.proc is not None
        before = {r["id"]: r["pid"] for r in
                  (await gw.status())["services"]["echo"]["versions"]["v1"]["replicas"]}
        async with Load([gw.url("/v1/echo")], clients=2) as load:
            code, out, err = await run_cli("up", gw.config_path, timeout=60)
            await load.stop()
        assert code == 1, (out, err)
        assert f"pid {gw.proc.pid}" in err and "another serve-gateway" in err, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert not load.failures, load.failures[:5]
        after = {r["id"]: r["pid"] for r in
                 (await gw.status())["services"]["echo"]["versions"]["v1"]["replicas"]}
        assert after == before and all(alive(pid) for pid in before.values())
    # the kernel dropped the lock with the first gateway: the same state starts again
    async with GatewayProc(tmp_path, {"echo": echo_service(replicas=1)}) as again:
        assert (await again.status())["services"]["echo"]["versions"]["v1"]["ready"] == 1
