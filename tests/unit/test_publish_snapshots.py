"""The controller's snapshot versions (control/publish.py): one build per loop turn however many
changes came in it, no new version when nothing changed, a long poll answered at once when the
caller is behind and woken by the next version. No sockets; the waits are zero-length or
answered by a publish, never by time passing."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from gateway.control.publish import Publisher


class State:
    def __init__(self) -> None:
        self.weights = {"v1": 100}
        self.builds = 0

    def build(self) -> dict[str, Any]:
        self.builds += 1
        return {"weights": dict(self.weights)}


async def turn() -> None:
    """Let the callbacks scheduled in this loop turn run."""
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def test_changes_in_one_turn_make_one_version_and_nothing_new_makes_none() -> None:
    state = State()
    pub = Publisher(state.build, epoch="e1")
    first = await pub.wait(None, 0)          # the first ask builds version 1
    assert first is not None and orjson.loads(first) == {
        "epoch": "e1", "version": 1, "snapshot": {"weights": {"v1": 100}}}
    state.weights = {"v1": 0, "v2": 100}
    for _ in range(5):                       # a commit, three replica publishes, a recheck ...
        pub.changed()
    await turn()
    assert (pub.version, state.builds) == (2, 2)
    pub.changed()                            # the same state again: built, not a new version
    await turn()
    assert (pub.version, state.builds) == (2, 3)
    assert await pub.wait("e1:2", 0) is None             # up to date: nothing new (204)
    assert await pub.wait("e1:1", 0) == pub.body         # behind: at once
    assert await pub.wait("e0:2", 0) == pub.body         # another controller's version 2
    await pub.stop()


async def test_a_long_poll_is_woken_by_the_next_version() -> None:
    state = State()
    pub = Publisher(state.build, epoch="e1")
    await pub.wait(None, 0)
    waiting = asyncio.ensure_future(pub.wait("e1:1", 30))
    await turn()
    assert not waiting.done()
    state.weights = {"v1": 50}
    pub.changed()
    body = await asyncio.wait_for(waiting, 5)
    assert body is not None and orjson.loads(body)["version"] == 2
    again = asyncio.ensure_future(pub.wait("e1:2", 30))
    await turn()
    await pub.stop()                         # shutting down: the poll gets its "nothing new"
    assert await asyncio.wait_for(again, 5) is None


async def test_nothing_is_built_until_a_data_plane_asks() -> None:
    state = State()
    pub = Publisher(state.build)
    pub.changed()
    await turn()
    assert state.builds == 0 and pub.version == 0
    await pub.stop()
