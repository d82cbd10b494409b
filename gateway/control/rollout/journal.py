"""Durable rollout state: one JSON file per service under ``<state_dir>/rollouts/``.

Each file also keeps the rollout's recent history (the lines ``rollout status`` shows), so a
restarted gateway still says what happened before it. Writes are atomic (temp file in the same directory, fsync, rename, fsync of the directory), so a
SIGKILL at any instant leaves either the old journal or the new one, never half of one. A journal
that cannot be read or parsed is *moved aside* (renamed with a timestamp) and reported, never
silently reset: resetting would restart a half-done rollout from step 0, or forget that it had
been rolled back, and the evidence of what went wrong would be lost. The planners stay pure; this
is the only rollout module that touches the disk, and its calls are blocking (run them through
``asyncio.to_thread``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from gateway.control.rollout.model import Phase, RolloutState
from gateway.errors import GatewayError

FORMAT = 1
SUFFIX = ".json"
HISTORY = 30        # lines kept per service

History = tuple[tuple[float, str], ...]   # (when, what), oldest first


class CorruptJournal(GatewayError):
    """A journal that could not be used; it now lives at ``moved_to`` for inspection."""

    def __init__(self, path: Path, moved_to: Path, cause: str) -> None:
        self.path, self.moved_to, self.cause = path, moved_to, cause
        super().__init__(f"rollout journal {path} unreadable ({cause}); moved to {moved_to}")


@dataclass(frozen=True)
class LoadResult:
    """Every readable journal by service, and every unreadable one (already moved aside)."""

    states: dict[str, RolloutState]
    corrupt: tuple[CorruptJournal, ...]
    histories: dict[str, History] = dataclasses.field(default_factory=dict)


def journal_dir(state_dir: str | Path) -> Path:
    return Path(state_dir) / "rollouts"


def path_for(state_dir: str | Path, service: str) -> Path:
    # quoted so that no service name can escape the directory or clash with a temp file
    return journal_dir(state_dir) / (quote(service, safe="") + SUFFIX)


def encode(state: RolloutState, history: History = ()) -> bytes:
    return json.dumps({"format": FORMAT, "state": dataclasses.asdict(state),
                       "history": [list(entry) for entry in history[-HISTORY:]]}, indent=1,
                      sort_keys=True).encode()


def decode(raw: bytes) -> RolloutState:
    """Parse a journal; any deviation raises ValueError (so the caller moves it aside)."""
    return decode_all(raw)[0]


def decode_all(raw: bytes) -> tuple[RolloutState, History]:
    """The state and history of a journal. The history is informational: entries that are not
    (number, text) pairs are skipped rather than costing the state it sits beside."""
    doc = json.loads(raw)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"not a format-{FORMAT} rollout journal")
    entries = doc.get("history")
    history = tuple((float(e[0]), e[1]) for e in (entries if isinstance(entries, list) else ())
                    if isinstance(e, list) and len(e) == 2 and isinstance(e[1], str)
                    and isinstance(e[0], int | float) and not isinstance(e[0], bool))
    return _state(doc), history[-HISTORY:]


def _state(doc: dict[str, Any]) -> RolloutState:
    data: Any = doc.get("state")
    if not isinstance(data, dict):
        raise ValueError("no state object")  # noqa: TRY004 - every ValueError moves it aside
    names = {f.name for f in dataclasses.fields(RolloutState)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}")
    data = dict(data)
    data["phase"] = Phase(data.get("phase", Phase.PROGRESSING))
    if data.get("paused_from") is not None:
        data["paused_from"] = Phase(data["paused_from"])
    data["last_checks"] = tuple(str(c) for c in data.get("last_checks", ()))
    try:
        state = RolloutState(**data)
    except TypeError as exc:   # a missing required field
        raise ValueError(str(exc)) from exc
    _check_types(state)
    return state


_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "Phase": (Phase,),
    "tuple[str, ...]": (tuple,),
}


def _check_types(state: RolloutState) -> None:
    """Reject a journal whose values have the wrong types: resuming from a string where a weight
    belongs would fail later, far from the cause."""
    for f in dataclasses.fields(state):
        value = getattr(state, f.name)
        allowed = [part.strip() for part in str(f.type).split("|")]
        if value is None:
            ok = "None" in allowed
        else:
            ok = any(isinstance(value, _TYPES[a]) for a in allowed if a in _TYPES) \
                and (not isinstance(value, bool) or "bool" in allowed)
        if not ok:
            raise ValueError(f"field {f.name}: unexpected value {value!r}")


def save(state_dir: str | Path, state: RolloutState, history: History = ()) -> Path:
    """Write ``state`` (and its last ``HISTORY`` lines) atomically; returns the journal's
    path."""
    path = path_for(state_dir, state.service)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(encode(state, history))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)   # the rename itself must survive a power cut
    return path


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def move_aside(path: Path, now: float) -> Path:
    """Rename ``path`` to ``<name>.corrupt-<UTC timestamp>`` (never over an earlier one)."""
    return _rename(path, now, "corrupt")


def _rename(path: Path, now: float, why: str) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    target = path.with_name(f"{path.name}.{why}-{stamp}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.{why}-{stamp}-{n}")
        n += 1
    os.replace(path, target)
    return target


def archive(state_dir: str | Path, service: str, now: float) -> Path | None:
    """Move the service's journal out of the way (``<name>.archived-<UTC timestamp>``): its
    rollout no longer applies, and a later rollout to the same version starts afresh. Returns
    where it went, None when there was none."""
    path = path_for(state_dir, service)
    if not path.exists():
        return None
    return _rename(path, now, "archived")


def load(state_dir: str | Path, service: str, now: float | None = None) -> RolloutState | None:
    """The service's journal, ``None`` when there is none; raises ``CorruptJournal`` (after
    moving the file aside) when there is one that cannot be used."""
    found = _load(path_for(state_dir, service), service, time.time() if now is None else now)
    return None if found is None else found[0]


def _load(path: Path, service: str, now: float) -> tuple[RolloutState, History] | None:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CorruptJournal(path, move_aside(path, now), f"read failed: {exc}") from exc
    try:
        state, history = decode_all(raw)
        if state.service != service:
            raise ValueError(f"journal of service {state.service!r}")
    except ValueError as exc:   # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CorruptJournal(path, move_aside(path, now), str(exc)) from exc
    return state, history


def load_all(state_dir: str | Path, now: float | None = None) -> LoadResult:
    """Every journal under ``state_dir``; one bad file never hides the others."""
    directory = journal_dir(state_dir)
    stamp = time.time() if now is None else now
    states: dict[str, RolloutState] = {}
    histories: dict[str, History] = {}
    corrupt: list[CorruptJournal] = []
    if not directory.is_dir():
        return LoadResult({}, ())
    for path in sorted(directory.glob("*" + SUFFIX)):
        if path.name.startswith("."):
            continue   # a temp file left by a killed writer; the rename never happened
        service = unquote(path.name[:-len(SUFFIX)])
        try:
            found = _load(path, service, stamp)
        except CorruptJournal as exc:
            corrupt.append(exc)
            continue
        if found is not None:
            states[service], histories[service] = found
    return LoadResult(states, tuple(corrupt), histories)
