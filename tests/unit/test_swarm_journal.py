"""Rollout journals in the swarm (Docker configs), against an in-memory stand-in for the configs
API (a fake replaces only the daemon): newest wins, a save never leaves zero journals, an
unreadable one is reported and kept, archives wait for the next flush or save, and two
instances never see each other's journals."""

from __future__ import annotations

import base64
import itertools
from types import SimpleNamespace
from typing import Any

from gateway.control.rollout.journal import HISTORY
from gateway.control.rollout.model import Phase, RolloutState
from gateway.control.rollout.store import FileStore, store_for
from gateway.runtimes.swarm import SwarmRuntime
from gateway.runtimes.swarm_journal import L_JOURNAL, SwarmJournalStore


class ConfigsApi:
    """configs / inspect_config / create_config / remove_config of docker's APIClient; the list
    leaves Data out, as the daemon may."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}
        self.ids = itertools.count(1)

    def configs(self, filters: dict[str, list[str]]) -> list[dict[str, Any]]:
        def match(labels: dict[str, str]) -> bool:
            for want in filters["label"]:
                key, eq, value = want.partition("=")
                if key not in labels or (eq and labels[key] != value):
                    return False
            return True
        return [{"ID": c["ID"], "Spec": {k: v for k, v in c["Spec"].items() if k != "Data"}}
                for c in self.data.values() if match(c["Spec"]["Labels"])]

    def inspect_config(self, cid: str) -> dict[str, Any]:
        return self.data[cid]

    def create_config(self, name: str, data: bytes, labels: dict[str, str]) -> dict[str, str]:
        assert len(name) <= 64 and len(data) < 500_000
        cid = f"c{next(self.ids)}"
        self.data[cid] = {"ID": cid, "Spec": {"Name": name, "Labels": dict(labels),
                                              "Data": base64.b64encode(data).decode()}}
        return {"ID": cid}

    def remove_config(self, cid: str) -> None:
        del self.data[cid]

    def names(self) -> list[str]:
        return sorted(c["Spec"]["Name"] for c in self.data.values())


def store(api: ConfigsApi, instance: str = "prod") -> SwarmJournalStore:
    client = SimpleNamespace(api=api)
    return SwarmJournalStore(lambda: client, instance)  # type: ignore[arg-type,return-value]


def state(step: int = 1, service: str = "echo") -> RolloutState:
    return RolloutState(service=service, strategy="canary", stable="v1", target="v2",
                        phase=Phase.PROGRESSING, step=step, started_at=100.0)


def test_a_controller_elsewhere_loads_the_newest_journal_with_its_history() -> None:
    api = ConfigsApi()
    first = store(api)
    first.save(state(1), ((1.0, "started"),))
    first.save(state(2), ((1.0, "started"), (2.0, "step 2")))
    first.save(state(1, service="mlp"), ())
    assert len(api.data) == 2                   # older versions removed after each save
    loaded = store(api).load_all(now=3.0)       # a new store: nothing shared but the API
    assert loaded.states == {"echo": state(2), "mlp": state(1, service="mlp")}
    assert loaded.histories["echo"] == ((1.0, "started"), (2.0, "step 2"))
    assert loaded.corrupt == ()
    assert store(api, instance="staging").load_all(now=3.0).states == {}


def test_a_crash_between_create_and_remove_leaves_two_and_the_newest_wins() -> None:
    api = ConfigsApi()
    s = store(api)
    s.save(state(1), ())
    kept = dict(api.data)
    s.save(state(2), ())
    api.data.update(kept)                        # the removal of the older one never ran
    assert store(api).load_all(now=0).states["echo"].step == 2
    s.save(state(3), ((0.0, "x"),) * (HISTORY + 5))
    assert len(api.data) == 1 and store(api).load_all(now=0).states["echo"].step == 3


def test_an_unreadable_journal_is_reported_and_left_for_inspection() -> None:
    api = ConfigsApi()
    s = store(api)
    s.save(state(1), ())
    (cid,) = api.data
    api.data[cid]["Spec"]["Data"] = base64.b64encode(b"{not json").decode()
    loaded = store(api).load_all(now=0)
    assert loaded.states == {}
    (bad,) = loaded.corrupt
    assert "left in place" in str(bad) and api.names() == [api.data[cid]["Spec"]["Name"]]
    s.save(state(4), ())                         # the next save supersedes it
    assert store(api).load_all(now=0).states["echo"].step == 4


def test_archive_is_recorded_then_carried_out_by_flush_or_the_next_save() -> None:
    api = ConfigsApi()
    s = store(api)
    s.save(state(1), ())
    s.save(state(1, service="mlp"), ())
    s.archive("echo", now=5.0)
    assert s.pending and len(api.data) == 2      # nothing done on the caller's (loop) thread
    s.flush()
    assert not s.pending
    assert [c["Spec"]["Labels"][L_JOURNAL] for c in api.data.values()] == ["mlp"]
    s.archive("mlp", now=6.0)
    s.save(state(1, service="mlp"), ())          # a new rollout: the old journal goes first
    assert not s.pending and store(api).load_all(now=0).states["mlp"].step == 1


def test_the_runtime_chooses_the_store(tmp_path: Any) -> None:
    assert isinstance(store_for(object(), str(tmp_path)), FileStore)
    assert isinstance(store_for(SwarmRuntime(instance="prod"), str(tmp_path)), SwarmJournalStore)


def test_a_manager_away_is_a_runtime_failure_the_controller_retries() -> None:
    import docker.errors
    import pytest

    from gateway.errors import RuntimeFailure

    class Away(ConfigsApi):
        def create_config(self, name: str, data: bytes, labels: dict[str, str]) -> dict[str, str]:
            raise docker.errors.APIError("503 Server Error", explanation="swarm has no leader")

    api = Away()
    with pytest.raises(RuntimeFailure, match="saving the rollout journal of echo: swarm has no leader"):
        store(api).save(state(1), ())
    assert api.data == {}
