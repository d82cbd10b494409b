"""Moved to ``gateway.examples.echo`` (shipped in the package, so it runs outside a checkout);
kept so that ``examples.models.echo:Echo`` in existing configs and images still works."""

from gateway.examples.echo import Echo

__all__ = ["Echo"]
