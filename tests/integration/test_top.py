"""``serve-gateway top`` on a real terminal (tmux) and through a pipe, against a real gateway
under load from ``serve-gateway bench``."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers import ECHO, GatewayProc, run_cli, wait_until

EXE = str(Path(sys.executable).with_name("serve-gateway"))


def _services() -> dict:
    return {
        "echo": {"route": "/v1/echo", "rewrite": "/predict",
                 "traffic": {"weights": {"v1": 75, "v2": 25}},
                 "versions": {"v1": {"command": ECHO, "replicas": 1},
                              "v2": {"command": ECHO, "replicas": 1}}},
        "batched": {"route": "/v1/batched", "rewrite": "/predict",
                    "batching": {"max_batch_size": 8, "max_wait_ms": 20},
                    "versions": {"v1": {"command": ECHO, "replicas": 1,
                                        "env": {"ECHO_DELAY_SECONDS": "0.02"}}}},
    }


def _load(gw: GatewayProc, route: str, rate: int, seconds: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([EXE, "bench", gw.url(route), "-d", '{"x": 1}', "--rate", str(rate),
                             "--duration", str(seconds), "--connections", "16"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Tmux:
    """A private tmux server (its own socket) running one command in a 200x40 pane."""

    def __init__(self, name: str) -> None:
        self.base = ["tmux", "-L", name]

    def start(self, command: str) -> None:
        # the size again after the start: a server started without a terminal may begin 80x24
        subprocess.run([*self.base, "-f", "/dev/null", "new-session", "-d", "-s", "top",
                        "-x", "200", "-y", "40", command, ";",
                        "set-option", "-t", "top", "remain-on-exit", "on", ";",
                        "set-option", "-t", "top", "window-size", "manual", ";",
                        "resize-window", "-t", "top", "-x", "200", "-y", "40"], check=True)

    def screen(self) -> str:
        return subprocess.run([*self.base, "capture-pane", "-p", "-t", "top"],
                              capture_output=True, text=True, check=True).stdout

    def keys(self, *keys: str) -> None:
        subprocess.run([*self.base, "send-keys", "-t", "top", *keys], check=True)

    def pane(self, fmt: str) -> str:
        return subprocess.run([*self.base, "display-message", "-p", "-t", "top", fmt],
                              capture_output=True, text=True, check=True).stdout.strip()

    async def exited(self, status_file: Path) -> str:
        """The screen once the command has exited; what it wrote to ``status_file`` (its exit
        code, see ``_exit_code_to``) is checked by the caller. A file, not tmux's 'Pane is dead'
        line: tmux sometimes leaves a detached pane's exited process unreaped for a while."""
        try:
            await wait_until(status_file.exists, 10, what="the exit")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the screen:\n{self.screen()}") from None
        await asyncio.sleep(0.2)
        return self.screen()

    def kill(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True, check=False)


def _exit_code_to(path: Path, command: str) -> str:
    """``command``, then its exit code written to ``path`` (a shell line for tmux)."""
    return f"{command}; echo $? > {path}"


def _row(screen: str, service: str, version: str) -> list[str]:
    for line in screen.splitlines():
        cols = line.split()
        if cols[:2] == [service, version]:
            return cols
    return []


async def test_top_on_a_terminal_refreshes_in_place_and_quits_on_q(tmp_path: Path) -> None:
    assert shutil.which("tmux"), "tmux is missing: scripts/setup.sh installs it"
    async with GatewayProc(tmp_path, _services()) as gw:
        loads = [_load(gw, "/v1/echo", 80, 25), _load(gw, "/v1/batched", 150, 25)]
        tmux = Tmux(f"sgw-top-{os.getpid()}")
        try:
            status = tmp_path / "top.exit"
            tmux.start(_exit_code_to(status, f"{EXE} top --admin {gw.admin('')} --interval 0.5"))
            screen = ""

            def live() -> bool:
                nonlocal screen
                screen = tmux.screen()
                echo1, batched = _row(screen, "echo", "v1"), _row(screen, "batched", "v1")
                # columns: SERVICE VERSION ROUTE WEIGHT REPLICAS RPS 5XX/S P99 QUEUE INFLIGHT BATCH
                return (len(echo1) >= 11 and echo1[5] != "-" and float(echo1[5]) > 20
                        and len(batched) >= 11 and "%)" in " ".join(batched[10:]))

            try:
                await wait_until(live, 40, what="rates and batch fill on the screen",
                                 interval=0.3)
            except AssertionError as exc:
                raise AssertionError(f"{exc}; the screen:\n{screen}") from None
            echo1, echo2 = _row(screen, "echo", "v1"), _row(screen, "echo", "v2")
            assert echo1[2:5] == ["/v1/echo", "75%", "1/1"], screen
            assert echo2[2:5] == ["/v1/echo", "25%", "1/1"], screen
            assert float(echo1[7]) > 0                          # p99 in ms
            batched = _row(screen, "batched", "v1")
            assert float(batched[10]) >= 1                       # mean batch size
            assert "serve-gateway top" in screen and "q: quit" in screen
            assert screen.count("SERVICE") == 1                  # redrawn in place, not scrolled

            before = screen
            await wait_until(lambda: tmux.screen() != before, 10, what="a refresh")
            tmux.keys("q")
            after = await tmux.exited(status)
            assert status.read_text().strip() == "0"
            # the terminal given back as it was: the view was on the alternate screen
            assert "SERVICE" not in after, after
        finally:
            tmux.kill()
            for p in loads:
                p.kill()
                p.wait()


async def test_top_through_a_pipe_prints_plain_text(tmp_path: Path) -> None:
    async with GatewayProc(tmp_path, _services()) as gw:
        load = _load(gw, "/v1/echo", 50, 10)
        try:
            await asyncio.sleep(1.0)   # let the load start: the frame's rates cover 0.5 s of it
            code, out, err = await run_cli("top", "--admin", gw.admin(""), "--interval", "0.5")
        finally:
            load.kill()
            load.wait()
        assert code == 0, err
        assert "\x1b" not in out                                  # no terminal codes
        lines = out.splitlines()
        assert lines[0].startswith(f"serve-gateway top  {gw.admin('')}")
        assert sum(1 for line in lines if line.startswith("SERVICE")) == 1
        assert float(_row(out, "echo", "v1")[5]) > 0
        assert _row(out, "batched", "v1")[4] == "1/1"

        code, out, err = await run_cli("top", "--admin", gw.admin(""), "--interval", "0.2",
                                       "-n", "2")
        assert code == 0 and out.count("SERVICE") == 2

    code, out, err = await run_cli("top", "--admin", gw.admin(""), "--interval", "0.2")
    assert code == 1 and "cannot reach the admin API" in err


async def test_top_without_rich_redraws_plain_text_in_place(tmp_path: Path) -> None:
    assert shutil.which("tmux"), "tmux is missing: scripts/setup.sh installs it"
    shadow = tmp_path / "no-rich"
    shadow.mkdir()
    (shadow / "rich.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'rich'\", name='rich')\n")
    async with GatewayProc(tmp_path, _services()) as gw:
        tmux = Tmux(f"sgw-top-plain-{os.getpid()}")
        try:
            status = tmp_path / "top.exit"
            tmux.start(_exit_code_to(status, f"env PYTHONPATH={shadow} {EXE} top --admin "
                                             f"{gw.admin('')} --interval 0.3"))
            await wait_until(lambda: "serve-gateway[top]" in tmux.screen(), 20,
                             what="the plain view", interval=0.2)
            await asyncio.sleep(1.0)                 # a few more frames: drawn over, not below
            screen = tmux.screen()
            assert screen.count("SERVICE") == 1 and _row(screen, "echo", "v2")[4] == "1/1"
            tmux.keys("q")
            await tmux.exited(status)
            assert status.read_text().strip() == "0"
        finally:
            tmux.kill()
