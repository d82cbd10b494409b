"""Moved to ``gateway.examples.mlp`` (shipped in the package, so it runs outside a checkout);
kept so that ``examples.models.mlp:MLP`` in existing configs and images still works."""

from gateway.examples.mlp import MLP

__all__ = ["MLP"]
