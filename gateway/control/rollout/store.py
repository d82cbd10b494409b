"""Where rollout journals live: a small store interface, chosen by the runtime.

Files under ``state_dir`` (``journal.py``) suit one host. A controller that may be restarted on
another node (the swarm runtime) keeps its journals in the cluster instead, where the new one
finds them; the runtime offers that store through an optional ``journal_store()`` method.

Every method may block (disk, Docker API): callers run them in a thread. ``archive`` only
records the wish (it is called from synchronous reload code); ``flush`` (or the next ``save``
of that service) carries it out.
"""

from __future__ import annotations

from typing import Protocol

from gateway.control.rollout import journal
from gateway.control.rollout.journal import History, LoadResult
from gateway.control.rollout.model import RolloutState


class JournalStore(Protocol):
    where: str                 # for logs and /status: where the journals are

    @property
    def pending(self) -> bool:
        """Archives recorded and not yet carried out."""

    def load_all(self, now: float) -> LoadResult:
        """Every journal; an unreadable one is reported in ``corrupt``, never reset."""

    def save(self, state: RolloutState, history: History) -> None:
        """Replace the service's journal, atomically (the old one or the new one, never half)."""

    def archive(self, service: str, now: float) -> None:
        """The service's journal no longer applies (quick: may only record it)."""

    def flush(self) -> None:
        """Carry out the recorded archives."""


class FileStore:
    """One JSON file per service under ``<state_dir>/rollouts/`` (journal.py)."""

    def __init__(self, state_dir: str) -> None:
        self.state_dir = state_dir
        self.where = str(journal.journal_dir(state_dir))

    @property
    def pending(self) -> bool:
        return False                 # a rename is done at once

    def load_all(self, now: float) -> LoadResult:
        return journal.load_all(self.state_dir, now)

    def save(self, state: RolloutState, history: History) -> None:
        journal.save(self.state_dir, state, history)

    def archive(self, service: str, now: float) -> None:
        journal.archive(self.state_dir, service, now)

    def flush(self) -> None:
        pass


def store_for(runtime: object, state_dir: str) -> JournalStore:
    """The runtime's own store when it has one, else files under ``state_dir``."""
    make = getattr(runtime, "journal_store", None)
    if make is None:
        return FileStore(state_dir)
    store: JournalStore = make()
    return store
