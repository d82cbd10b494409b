"""Workers started through a shell die with a SIGKILLed gateway: the whole process group, not
only the shell that PR_SET_PDEATHSIG reaches (on main the model process lived on, re-parented
to init, holding its port)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.helpers import GatewayProc, group_members, kill_group, wait_until

SHELL = ["sh", "-c", "serve-gateway worker examples.models.echo:Echo --port {port}; true"]


def reapers(state_dir: Path) -> list[int]:
    """Living reaper processes of this gateway (its argv names the state dir)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.endswith(b"reaper.py") for a in argv) and str(state_dir).encode() in argv:
            found.append(int(entry))
    return found


async def test_sigkilled_gateway_takes_shell_started_workers_with_it(tmp_path: Path) -> None:
    services = {"echo": {"route": "/v1/echo", "rewrite": "/predict",
                         "versions": {"v1": {"command": SHELL, "replicas": 2}}}}
    gw = GatewayProc(tmp_path, services)
    groups: list[int] = []
    try:
        async with gw:
            replicas = (await gw.status())["services"]["echo"]["versions"]["v1"]["replicas"]
            groups = [r["pid"] for r in replicas]
            # the shell and the model process under it, in the replica's own group
            assert all(len(group_members(g)) >= 2 for g in groups), \
                {g: group_members(g) for g in groups}
            gw.expect_exit_code = None
            assert await gw.stop(signal.SIGKILL) == -signal.SIGKILL
            gw.worker_pids.clear()            # checked below, group by group
            await wait_until(lambda: not any(group_members(g) for g in groups), 10,
                             what="every process of every worker group to die")
            await wait_until(lambda: not reapers(gw.state_dir), 10, what="the reaper to exit")
    finally:
        for g in groups:
            kill_group(g)


async def test_a_stopped_gateway_leaves_no_reaper(tmp_path: Path) -> None:
    services = {"echo": {"route": "/v1/echo", "rewrite": "/predict",
                         "versions": {"v1": {"command": SHELL, "replicas": 1}}}}
    async with GatewayProc(tmp_path, services) as gw:
        assert len(reapers(gw.state_dir)) == 1
    await wait_until(lambda: not reapers(gw.state_dir), 10, what="the reaper to exit")


async def test_a_restarted_reaper_guards_the_groups_already_running(tmp_path: Path) -> None:
    """Someone kills the reaper: the next replica start brings a new one, which learns every
    running group, not only the new one."""
    from gateway.runtimes.base import ReplicaSpec
    from gateway.runtimes.process import ProcessRuntime

    rt = ProcessRuntime(state_dir=str(tmp_path))
    sleeper = ReplicaSpec("svc", "v1", "r1", command=("sh", "-c", "sleep 60; true"))
    first = await rt.start(sleeper)
    reaper = rt._reaper._proc                     # the process under test
    assert reaper is not None
    os.kill(reaper.pid, signal.SIGKILL)
    reaper.wait()
    second = await rt.start(sleeper)
    groups = [r.pid for r in (first, second) if r.pid]
    try:
        await wait_until(lambda: all(len(group_members(g)) == 2 for g in groups), 10,
                         what="sh and its sleep in each group")
        rt._reaper.close()                        # end of file, as when the gateway dies
        await wait_until(lambda: not any(group_members(g) for g in groups), 10,
                         what="both groups killed by the new reaper")
    finally:
        for g in groups:
            kill_group(g)
        await rt.close()
