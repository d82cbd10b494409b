"""Plugin registry: a name or ``"module:attr"`` -> a factory.

Built-in plugins of a kind live in ``plugins/<kind>s.py`` (comparator -> ``plugins.comparators``)
and register themselves with ``@register(kind, name)``; that module is imported the first time
a name of its kind is looked up. Anything else is ``"package.module:attr"``, imported as is, so
users extend the gateway without touching it. The factory is called with the plugin's options
from the config (``factory(**options)``) and returns the plugin object.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, TypeVar

Factory = Callable[..., Any]
F = TypeVar("F", bound=Factory)

_registry: dict[tuple[str, str], Factory] = {}


class PluginError(LookupError):
    """A plugin reference that names nothing, or whose module fails to import."""


def register(kind: str, name: str) -> Callable[[F], F]:
    """Decorator: make ``factory`` the plugin ``name`` of ``kind``."""
    def deco(factory: F) -> F:
        _registry[(kind, name)] = factory
        return factory
    return deco


def resolve(kind: str, ref: str) -> Factory:
    """The factory a config's reference names: a built-in name or ``module:attr``."""
    if ":" in ref:
        module_name, _, attr = ref.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as exc:
            raise PluginError(f"cannot load {kind} {ref!r}: {exc}") from None
        if not callable(obj):
            raise PluginError(f"{kind} {ref!r} is not callable")
        return obj  # type: ignore[no-any-return]
    if (kind, ref) not in _registry:
        try:
            importlib.import_module(f"plugins.{kind}s")
        except ImportError as exc:
            raise PluginError(f"no built-in {kind} plugins: {exc}") from None
    try:
        return _registry[(kind, ref)]
    except KeyError:
        known = ", ".join(sorted(n for k, n in _registry if k == kind))
        raise PluginError(f"no {kind} named {ref!r} (built-ins: {known}; "
                          f"or give 'module:attr')") from None


def create(kind: str, ref: str, options: dict[str, Any] | None = None) -> Any:
    """Resolve and instantiate; bad options are a PluginError too (they come from a config)."""
    factory = resolve(kind, ref)
    try:
        return factory(**(options or {}))
    except (TypeError, ValueError) as exc:
        raise PluginError(f"{kind} {ref!r}: {exc}") from None
