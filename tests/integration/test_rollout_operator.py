"""A rollout as an operator reads and steers it on a real gateway: a step held by a failing
analysis says so (and how many analyses failed) instead of "next step in 0s", `rollout retry`
starts an aborted rollout again, and the rollout's history is still there after the gateway is
killed and started again."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.helpers import GatewayProc, Load, run_cli, wait_until
from tests.integration.test_rollouts import example, rollout_of


async def test_held_step_retry_and_history_after_restart(tmp_path: Path) -> None:
    services = example("canary", steps=[{"weight": 50, "pause": "1s"}, {"weight": 80}],
                       analysis={"interval": "1s", "min_requests": 5, "failure_limit": 1000,
                                 "max_error_rate": 0.01})
    services["echo"]["versions"]["v2"]["env"]["ECHO_FAIL_EVERY"] = "2"   # 50% errors
    gw = GatewayProc(tmp_path, services, ready=False)
    async with gw:
        async with Load([gw.url("/v1/echo")], clients=2, limit_s=60) as load:
            async def held() -> bool:
                doc = await rollout_of(gw)
                return doc["failures"] >= 2 and doc["held"] is not None
            await wait_until(held, 40, what="a step held by failing analyses", interval=0.2)
            await load.stop()
        first = (await rollout_of(gw))["failures"]
        rc, out, err = await run_cli("rollout", "status", "echo", "-c", gw.config_path)
        assert rc == 0, err
        assert "step held: waiting for a passing analysis (last: fail)" in out, out
        assert "next step in" not in out
        last = (await rollout_of(gw))["failures"]     # a late answer may fail one more
        assert any(f"failed analyses in a row: {n}/1000 (rolls back at 1000)" in out
                   for n in range(first, last + 1)), out

        rc, out, err = await run_cli("rollout", "abort", "echo", "-c", gw.config_path)
        assert rc == 0 and "ABORTED" in out, out + err
        rc, out, err = await run_cli("-c", gw.config_path, "rollout", "retry", "echo")
        assert rc == 0 and "PROGRESSING" in out, out + err
        assert "retry by operator: v1 -> v2 starts again from the first step (was aborted: " \
               "aborted by operator)" in out
        rc, out, err = await run_cli("rollout", "retry", "echo", "-c", gw.config_path)
        assert rc == 1 and "retry refused: it is progressing" in err, out + err
        before = [e["line"] for e in (await rollout_of(gw))["log"]]
        assert any(line.startswith("analysis fail") for line in before)
        gw.expect_exit_code = None
        assert await gw.stop(signal.SIGKILL) == -signal.SIGKILL

    again = GatewayProc(tmp_path, services, ready=False)
    async with again:
        lines = [e["line"] for e in (await rollout_of(again))["log"]]
        i = next(i for i, line in enumerate(lines) if line.endswith("after a gateway restart"))
        assert lines[i].startswith("rollout v1 -> v2 resumed (progressing, step 1")
        assert i > 0 and lines[:i] == before[-i:], (lines, before)   # what it said before
        assert "aborted by operator" in lines
        assert any(line.startswith("retry by operator") for line in lines)
        rc, out, _ = await run_cli("rollout", "status", "echo", "-c", again.config_path)
        assert "after a gateway restart" in out
