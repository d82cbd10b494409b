"""Config reload: load -> validate -> diff -> apply, in full or not at all.

SIGHUP, ``serve-gateway reload`` and ``POST /reload`` all end here. Any error keeps the running
spec and table whole, is logged on one line with its YAML path and line, and is counted in
``serve_gateway_config_reloads_total{result="failure"}``. Settings a running process cannot
change (listen addresses, runtime, state_dir, instance) are held at their running values and
reported as "needs restart" while everything else applies.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError, ConfigProblem
from gateway.metrics import Metrics
from gateway.spec import Spec, load_spec
from gateway.spec.diff import SpecDiff, diff_specs, keep_restart_fields

log = logging.getLogger("gateway.reload")

# apply(spec) makes ``spec`` the running config and returns notes for the operator. It raises
# ConfigError only before changing anything (a token file it cannot read ...), and any other
# error only after putting the running state back as it was (never by re-applying a spec).
Apply = Callable[[Spec], list[str]]
# check(spec) raises ConfigError for a plan the runtime cannot run (more GPUs than exist ...).
Check = Callable[[Spec], Awaitable[None]]


@dataclass
class ReloadResult:
    """What one reload did; the admin endpoint and the CLI print it."""

    ok: bool
    config: str | None
    digest: str                        # the running config's hash afterwards
    previous: str                      # ... and before
    diff: SpecDiff | None = None
    error: ConfigError | None = None
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def needs_restart(self) -> list[str]:
        return list(self.diff.needs_restart) if self.diff else []

    def as_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"ok": self.ok, "config": self.config, "hash": self.digest,
                               "previous_hash": self.previous, "seconds": round(self.seconds, 4)}
        if self.error is not None:
            doc.update(error="invalid_config", service=None, detail=self.error.render(),
                       problems=[{"path": p.path, "message": p.message, "line": p.line}
                                 for p in self.error.problems])
        if self.diff is not None:
            doc.update(changed=not self.diff.empty, changes=self.diff.lines(),
                       diff=self.diff.as_dict(), needs_restart=self.needs_restart)
        doc["notes"] = self.notes
        return doc


async def reload_config(path: Path | None, running: Spec, apply: Apply,
                        metrics: Metrics, check: Check | None = None) -> ReloadResult:
    """Read ``path`` again and apply it over ``running``; see the module docstring."""
    began = time.monotonic()
    old = running.digest()
    source = str(path) if path else None

    def failed(exc: ConfigError) -> ReloadResult:
        metrics.reloaded(False)
        # one line: "<file>: <yaml.path>: <message> (line N); ..."
        log.error("reload failed, still serving config %s: %s", old, exc)
        return ReloadResult(False, source, old, old, error=exc, seconds=time.monotonic() - began)

    if path is None:
        return failed(ConfigError([ConfigProblem("", "the gateway was started without a "
                                                     "config file")]))
    try:
        # reading and validating is blocking work; the loop keeps serving meanwhile
        new = await asyncio.to_thread(load_spec, path)
        diff = diff_specs(running, new)
        effective = keep_restart_fields(running, new)
        if check is not None:
            await check(effective)
    except ConfigError as exc:
        return failed(exc)
    except Exception as exc:   # a bug: nothing has changed yet; report it, keep serving
        log.exception("checking the reloaded config failed")
        return failed(internal(exc, "checking", source))
    try:
        notes = apply(effective)
    except ConfigError as exc:   # refused before any change (a token file it cannot read ...)
        return failed(ConfigError(exc.problems, exc.source or source or ""))
    except Exception as exc:   # a bug: apply has put the running state back as it was
        log.exception("applying the reloaded config failed; config %s restored", old)
        return failed(internal(exc, "applying", source))
    metrics.reloaded(True, restart_pending=bool(diff.needs_restart))
    result = ReloadResult(True, source, effective.digest(), old, diff, notes=notes,
                          seconds=time.monotonic() - began)
    log.info("reloaded %s: config %s -> %s (%s)", source, old, result.digest,
             "; ".join(diff.lines()) or "no changes")
    if diff.needs_restart:
        log.warning("config %s asks for changes that need a restart: %s", source,
                    ", ".join(diff.needs_restart))
    return result


def internal(exc: Exception, stage: str, source: str | None) -> ConfigError:
    return ConfigError([ConfigProblem("", f"internal error while {stage} the config, which was "
                                          f"not applied: {exc!r}")], source or "")
