"""What the admin endpoints may ask of a running gateway: a small structural interface, so that
``gateway.admin`` never imports ``gateway.app`` (the composition root imports the admin package,
not the other way round) and the handlers can be driven by a fake in tests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from gateway.control.reload import ReloadResult
    from gateway.control.rollout.model import Command
    from gateway.dataplane.table import RoutingTable
    from gateway.spec.models import ServiceSpec


class RolloutControl(Protocol):
    """The rollout controller as the admin API sees it."""

    @property
    def runs(self) -> Mapping[str, Any]: ...

    def governs(self, service: str) -> bool: ...

    def held(self, service: str, version: str) -> bool: ...

    def describe(self, service: str) -> dict[str, Any] | None: ...

    def status(self) -> dict[str, Any]: ...

    async def command(self, service: str, command: Command) -> tuple[bool, dict[str, Any]]: ...


class Facade(Protocol):
    """The gateway as the admin endpoints see it."""

    @property
    def services(self) -> Mapping[str, ServiceSpec]: ...

    @property
    def rollout_control(self) -> RolloutControl: ...

    def routing(self) -> RoutingTable:
        """The routing table in force (read-only: the data plane's current snapshot)."""
        ...

    def traffic(self, service: str) -> dict[str, Any]:
        """``weights`` in force, ``file_weights`` and ``weight_override`` (None when none)."""
        ...

    def set_weights(self, service: str, weights: Mapping[str, int] | None) -> None:
        """A live weight override (None: back to the file's), committed at once."""
        ...

    def pin(self, service: str, version: str, replicas: int | None) -> None:
        """Pin a version's replica count (None: back to its autoscaler or the file)."""
        ...

    def replicas(self, service: str, version: str) -> dict[str, Any]:
        """``desired``, ``ready`` and ``autoscale`` of one version."""
        ...

    async def reload(self) -> ReloadResult: ...

    async def snapshot(self, after: str | None, wait: float) -> bytes | None:
        """The routing snapshot (JSON) for a data-plane process, at once when its version is
        not ``after``, else the next one within ``wait`` seconds; None: no new one."""
        ...

    def report(self, doc: dict[str, Any]) -> tuple[int, int]:
        """A data-plane process's report (admin/control.py checks its shape); the share of the
        per-replica limits (index, count) the process is to keep."""
        ...
