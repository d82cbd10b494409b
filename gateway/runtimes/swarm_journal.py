"""Rollout journals kept in the swarm itself, as Docker configs: a controller restarted on any
manager node finds them (a state_dir on one node's disk would be lost with that node).

One config per journal version, labelled with the instance, the service and a sequence number;
a save creates the next one, then removes the older ones, so a controller killed in between
leaves two and the newest wins: the old journal or the new one, never half of one. Configs are
immutable and at most 500 KB (a journal with its 30 history lines is a few KB). An archived
journal is removed (the gateway's log keeps the line saying why). A journal that cannot be
parsed is reported and left in place for inspection; the next save supersedes it.

The methods block (Docker API): the rollout controller calls them in a thread.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import docker
import docker.errors

from gateway.control.rollout.journal import (
    CorruptJournal,
    History,
    LoadResult,
    decode_all,
    encode,
)
from gateway.control.rollout.model import RolloutState
from gateway.errors import RuntimeFailure
from gateway.runtimes.docker_attrs import L_INSTANCE, LABEL
from gateway.runtimes.docker_client import SDK_ERRORS, explain

log = logging.getLogger("gateway.runtimes.swarm")

L_JOURNAL = f"{LABEL}.journal"      # the service the journal is for
L_SEQ = f"{LABEL}.journal-seq"


class SwarmJournalStore:
    """The JournalStore (control/rollout/store.py) of the swarm runtime."""

    def __init__(self, make_client: Callable[[], docker.DockerClient], instance: str) -> None:
        self._make_client = make_client
        self._client: docker.DockerClient | None = None
        self.instance = instance
        self.where = f"swarm configs labelled {L_JOURNAL} ({L_INSTANCE}={instance})"
        self._archive: set[str] = set()

    @property
    def pending(self) -> bool:
        return bool(self._archive)

    def _api(self) -> Any:
        if self._client is None:
            self._client = self._make_client()
        return self._client.api

    def _configs(self, service: str | None = None) -> list[dict[str, Any]]:
        labels = [f"{L_INSTANCE}={self.instance}",
                  f"{L_JOURNAL}={service}" if service is not None else L_JOURNAL]
        found: list[dict[str, Any]] = self._api().configs(filters={"label": labels})
        return sorted(found, key=_seq)

    def load_all(self, now: float) -> LoadResult:
        with _as_runtime_failure("reading rollout journals"):
            return self._load_all()

    def _load_all(self) -> LoadResult:
        newest: dict[str, dict[str, Any]] = {}
        for config in self._configs():
            newest[config["Spec"]["Labels"][L_JOURNAL]] = config      # sorted: the last wins
        states: dict[str, RolloutState] = {}
        histories: dict[str, History] = {}
        corrupt: list[CorruptJournal] = []
        for service, config in sorted(newest.items()):
            name = Path(config["Spec"]["Name"])
            try:
                data = self._api().inspect_config(config["ID"])["Spec"].get("Data") or ""
                state, history = decode_all(base64.b64decode(data))
                if state.service != service:
                    raise ValueError(f"journal of service {state.service!r}")
            except (ValueError, docker.errors.NotFound) as exc:
                corrupt.append(CorruptJournal(name, name, f"{exc} (left in place)"))
                continue
            states[service], histories[service] = state, history
        return LoadResult(states, tuple(corrupt), histories)

    def save(self, state: RolloutState, history: History) -> None:
        with _as_runtime_failure(f"saving the rollout journal of {state.service}"):
            self._save(state, history)

    def _save(self, state: RolloutState, history: History) -> None:
        service = state.service
        if service in self._archive:            # an archive recorded before this new rollout
            self._remove(service)
        older = self._configs(service)
        seq = _seq(older[-1]) + 1 if older else 1
        tag = hashlib.sha256(f"{self.instance}\0{service}".encode()).hexdigest()[:16]
        self._api().create_config(
            f"sgw-journal-{tag}-{seq}", encode(state, history),
            labels={L_INSTANCE: self.instance, L_JOURNAL: service, L_SEQ: str(seq)})
        for config in older:
            self._delete(config)

    def archive(self, service: str, now: float) -> None:
        self._archive.add(service)

    def flush(self) -> None:
        with _as_runtime_failure("removing archived rollout journals"):
            for service in sorted(self._archive):
                self._remove(service)

    def _remove(self, service: str) -> None:
        for config in self._configs(service):
            self._delete(config)
        self._archive.discard(service)
        log.info("removed the rollout journal of %s from the swarm", service)

    def _delete(self, config: dict[str, Any]) -> None:
        try:
            self._api().remove_config(config["ID"])
        except docker.errors.NotFound:
            pass


@contextmanager
def _as_runtime_failure(what: str) -> Iterator[None]:
    """The Docker SDK's errors as the gateway's RuntimeFailure (the rollout controller logs it
    and retries at its next tick)."""
    try:
        yield
    except SDK_ERRORS as exc:
        raise RuntimeFailure(f"swarm: {what}: {explain(exc)}") from exc


def _seq(config: dict[str, Any]) -> int:
    try:
        return int(((config.get("Spec") or {}).get("Labels") or {}).get(L_SEQ, 0))
    except ValueError:
        return 0
