"""Journal: atomic write, resume equality, corrupt files moved aside and reported."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from gateway.control.rollout import journal, plan
from gateway.control.rollout.journal import CorruptJournal
from gateway.control.rollout.model import (
    CanaryPlan,
    CanaryStep,
    Command,
    Observations,
    Phase,
    RolloutState,
    VersionObs,
)
from tests.fakes import GOOD, Sim

PLAN = CanaryPlan(service="mlp", stable="v1", target="v2", replicas=4,
                  steps=(CanaryStep(10, 60), CanaryStep(50, 60)))


def mid_canary() -> Sim:
    sim = Sim(PLAN)
    sim.step()
    sim.set("v2", **GOOD)
    sim.tick(30)
    sim.tick(30)
    sim.tick(0, "pause")
    assert sim.state.phase == Phase.PAUSED and sim.state.step == 1
    return sim


def test_round_trip_and_resume_at_the_same_step(tmp_path: Path) -> None:
    sim = mid_canary()
    path = journal.save(tmp_path, sim.state)
    assert path == tmp_path / "rollouts" / "mlp.json"
    loaded = journal.load(tmp_path, "mlp")
    assert loaded == sim.state and loaded is not None
    assert isinstance(loaded.phase, Phase) and isinstance(loaded.last_checks, tuple)
    obs = Observations(dict(sim.obs))
    # a restarted gateway continues exactly as the one that never stopped
    for command in (None, Command("resume"), None):
        now = sim.now + 5
        d1, s1 = plan(PLAN, sim.state, obs, now, command)
        d2, s2 = plan(PLAN, loaded, obs, now, command)
        assert (d1, s1) == (d2, s2)
        journal.save(tmp_path, s2)
        sim.state, sim.now, loaded = s1, now, journal.load(tmp_path, "mlp")
        assert loaded == s1


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    sim = mid_canary()
    journal.save(tmp_path, sim.state)
    before = (tmp_path / "rollouts" / "mlp.json").read_bytes()

    def broken_fsync(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        journal.save(tmp_path, replace(sim.state, step=7))
    monkeypatch.undo()
    assert (tmp_path / "rollouts" / "mlp.json").read_bytes() == before
    assert [p.name for p in (tmp_path / "rollouts").iterdir()] == ["mlp.json"]
    journal.save(tmp_path, replace(sim.state, step=7))
    assert journal.load(tmp_path, "mlp") == replace(sim.state, step=7)


def test_missing_journal_is_none(tmp_path: Path) -> None:
    assert journal.load(tmp_path, "mlp") is None
    assert journal.load_all(tmp_path) == journal.LoadResult({}, ())


@pytest.mark.parametrize("content", [
    b"{not json", b"\xff\xfe", b"[]", b'{"format": 99, "state": {}}',
    b'{"format": 1, "state": {"service": "mlp"}}',
    (b'{"format": 1, "state": {"service": "mlp", "strategy": "canary", "stable": "a", '
    b'"target": "b", "started_at": 1.0, "weight": "ten"}}'),
    (b'{"format": 1, "state": {"service": "other", "strategy": "canary", "stable": "a", '
    b'"target": "b", "started_at": 1.0}}'),
    (b'{"format": 1, "state": {"service": "mlp", "strategy": "canary", "stable": "a", '
    b'"target": "b", "started_at": 1.0, "phase": "sideways"}}'),
    (b'{"format": 1, "state": {"service": "mlp", "strategy": "canary", "stable": "a", '
    b'"target": "b", "started_at": 1.0, "surprise": 1}}'),
])
def test_corrupt_journal_is_moved_aside_and_reported(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "rollouts" / "mlp.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with pytest.raises(CorruptJournal) as info:
        journal.load(tmp_path, "mlp", now=0.0)
    err = info.value
    assert not path.exists() and err.path == path
    assert err.moved_to.name == "mlp.json.corrupt-19700101T000000Z"
    assert err.moved_to.read_bytes() == content and str(err.moved_to) in str(err)
    assert journal.load(tmp_path, "mlp") is None            # moved, so not reported twice


def test_load_all_reports_bad_files_and_keeps_good_ones(tmp_path: Path) -> None:
    good = mid_canary().state
    other = replace(good, service="a/b c")                  # quoted file name
    journal.save(tmp_path, good)
    journal.save(tmp_path, other)
    bad = tmp_path / "rollouts" / "broken.json"
    bad.write_text("{")
    (tmp_path / "rollouts" / ".mlp.json.123.tmp").write_text("half")   # killed writer
    (tmp_path / "rollouts" / "broken.json.corrupt-19700101T000000Z").write_text("old")
    result = journal.load_all(tmp_path, now=0.0)
    assert result.states == {"mlp": good, "a/b c": other}
    assert [c.path for c in result.corrupt] == [bad]
    assert result.corrupt[0].moved_to.name == "broken.json.corrupt-19700101T000000Z-1"


def test_encoding_is_plain_json(tmp_path: Path) -> None:
    state = RolloutState(service="mlp", strategy="ab", stable="a", target="b", started_at=1.5,
                         paused_from=Phase.PROGRESSING, phase=Phase.PAUSED, last_checks=("x",))
    doc = json.loads(journal.encode(state))
    assert doc["format"] == 1 and doc["state"]["phase"] == "paused"
    assert journal.decode(journal.encode(state)) == state
    assert VersionObs() == VersionObs()
