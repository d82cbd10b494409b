"""Gateway._apply: a bug half-way through a reload puts the running state back as it was (live
weights, pins, routing), instead of re-applying the old file over it (no sockets: the planes
are built, never started)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import gateway.app
from gateway.app import Gateway
from gateway.spec import Spec, parse_spec

TEXT = """\
gateway: {{state_dir: {state}}}
services:
  echo:
    route: {route}
    traffic: {{weights: {{v1: 1, v2: 1}}}}
    versions:
      v1: {{command: "serve-gateway worker m:C --port {{port}}", replicas: 1}}
      v2: {{command: "serve-gateway worker m:C --port {{port}}", replicas: {v2}}}
"""


async def test_a_bug_while_applying_restores_weights_pins_and_routing(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    old = parse_spec(TEXT.format(state=tmp_path, route="/v1/echo", v2=1))
    gw = Gateway(old)
    gw._apply(old)                                    # as at start
    gw.weight_overrides = {"echo": {"v1": 100, "v2": 0}}   # live traffic change
    gw.commit()
    gw.autoscaler.pin("echo", "v2", 3)                # live scale change
    table = gw.holder.current

    def boom(*args: object) -> list[str]:
        raise RuntimeError("boom")

    monkeypatch.setattr(gw.autoscaler, "apply", boom)  # fails after rollouts, supervisor
    new = parse_spec(TEXT.format(state=tmp_path, route="/v2/echo", v2=2))
    with pytest.raises(RuntimeError):
        gw._apply(new)
    assert gw.spec is old
    assert gw.weight_overrides == {"echo": {"v1": 100, "v2": 0}}
    assert gw.autoscaler.versions[("echo", "v2")].pin == 3
    assert gw.supervisor.groups[("echo", "v2")].desired == 3
    assert gw.supervisor.groups[("echo", "v1")].spec == old.services["echo"].versions["v1"]
    current = gw.holder.current
    assert current is not table                     # rebuilt from the restored state ...
    assert current.by_name["echo"].weights == table.by_name["echo"].weights   # ... the same
    assert current.by_name["echo"].prefix == "/v1/echo"


async def test_a_table_that_cannot_be_built_changes_nothing(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The commit builds the routing table before it touches the supervisor: a reload adding a
    version whose table build fails never starts (nor leaves behind) a group for it."""
    old = parse_spec(TEXT.format(state=tmp_path, route="/v1/echo", v2=1))
    gw = Gateway(old)
    gw._apply(old)
    table = gw.holder.current
    desired = {k: g.desired for k, g in gw.supervisor.groups.items()}
    build = gateway.app.build_table

    def picky(spec: Spec, *args: Any, **kw: Any) -> Any:
        if "v3" in spec.services["echo"].versions:
            raise RuntimeError("a bug in the table build")
        return build(spec, *args, **kw)

    monkeypatch.setattr(gateway.app, "build_table", picky)
    text = TEXT.format(state=tmp_path, route="/v1/echo", v2=1).replace(
        "    versions:\n", "    versions:\n      v3: {command: \"w --port {port}\", replicas: 2}\n")
    with pytest.raises(RuntimeError):
        gw._apply(parse_spec(text))
    assert gw.spec is old and gw.holder.current is not None
    assert {k: g.desired for k, g in gw.supervisor.groups.items()} == desired   # no v3 group
    assert gw.holder.current.by_name["echo"].weights == table.by_name["echo"].weights


async def test_the_command_loop_survives_a_reload_that_raises(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    gw = Gateway(parse_spec(TEXT.format(state=tmp_path, route="/v1/echo", v2=1)))
    done: list[str] = []

    async def start() -> None:
        done.append("start")

    async def stop(keep_replicas: bool = False) -> None:
        done.append("stop")

    async def reload() -> None:
        done.append("reload")
        raise RuntimeError("a bug")

    monkeypatch.setattr(gw, "start", start)
    monkeypatch.setattr(gw, "stop", stop)
    monkeypatch.setattr(gw, "reload", reload)
    monkeypatch.setattr("gateway.app.settle_gc", lambda: None)   # leave this process's gc be
    for cmd in ("reload", "reload", "stop"):
        gw._commands.put_nowait(cmd)
    await gw.run()                       # returns: the loop went on to the stop command
    assert done == ["start", "reload", "reload", "stop"]
