"""Plugin registry: a name or ``"module:attr"`` -> a factory.

Three ways a config's reference is found, in this order:

1. built-in names: the plugins of a kind live in ``gateway/plugins_builtin/<kind>s.py``
   (comparator -> ``gateway.plugins_builtin.comparators``) and register themselves with
   ``@register(kind, name)``; that module is imported the first time a name of its kind is
   looked up;
2. installed names: a distribution declares entry points in the group ``serve_gateway.plugins``
   named ``<kind>.<name>`` (``comparator.cosine = "my_pkg.compare:cosine"``), so that
   ``pip install my-plugins`` is all a config needs to say ``comparator: cosine``;
3. ``"package.module:attr"``, imported as is, so users extend the gateway without touching it
   (``plugins.<module>:attr``, the built-ins' path before they moved into the package, still
   names them).

The factory is called with the plugin's options from the config (``factory(**options)``) and
returns the plugin object.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib import metadata
from typing import Any, TypeVar

Factory = Callable[..., Any]
F = TypeVar("F", bound=Factory)

ENTRY_POINT_GROUP = "serve_gateway.plugins"
BUILTIN_PACKAGE = "gateway.plugins_builtin"
_LEGACY_PACKAGE = "plugins"     # where the built-ins were a top-level package (0.1.0)

_registry: dict[tuple[str, str], Factory] = {}


class PluginError(LookupError):
    """A plugin reference that names nothing, or whose module fails to import."""


def register(kind: str, name: str) -> Callable[[F], F]:
    """Decorator: make ``factory`` the plugin ``name`` of ``kind``."""
    def deco(factory: F) -> F:
        _registry[(kind, name)] = factory
        return factory
    return deco


def _import(module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # `plugins.comparators:exact` written for 0.1.0, where the built-ins were top-level
        legacy = module_name.partition(".")[0] == _LEGACY_PACKAGE and exc.name == _LEGACY_PACKAGE
        if not legacy:
            raise
        return importlib.import_module(BUILTIN_PACKAGE + module_name[len(_LEGACY_PACKAGE):])


def _load_attr(kind: str, ref: str) -> Factory:
    module_name, _, attr = ref.partition(":")
    try:
        obj: Any = _import(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise PluginError(f"cannot load {kind} {ref!r}: {exc}") from None
    if not callable(obj):
        raise PluginError(f"{kind} {ref!r} is not callable")
    return obj  # type: ignore[no-any-return]


def installed(kind: str) -> dict[str, metadata.EntryPoint]:
    """Entry points of ``kind`` that installed distributions declare, by plugin name."""
    prefix = kind + "."
    return {ep.name[len(prefix):]: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)
            if ep.name.startswith(prefix)}


def _from_entry_point(kind: str, name: str, ep: metadata.EntryPoint) -> Factory:
    dist = ep.dist.name if ep.dist is not None else "an installed package"
    try:
        obj = ep.load()
    except Exception as exc:  # noqa: BLE001 - any failure of a third-party import: say whose
        raise PluginError(f"{kind} {name!r} (entry point {ep.value!r} of {dist}) cannot be "
                          f"loaded: {exc.__class__.__name__}: {exc}") from None
    if not callable(obj):
        raise PluginError(f"{kind} {name!r} (entry point {ep.value!r} of {dist}) is not callable")
    return obj  # type: ignore[no-any-return]


def resolve(kind: str, ref: str) -> Factory:
    """The factory a config's reference names: a built-in name, an installed entry point's
    name, or ``module:attr``."""
    if ":" in ref:
        return _load_attr(kind, ref)
    if (kind, ref) not in _registry:
        module = f"{BUILTIN_PACKAGE}.{kind}s"
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:      # a built-in module that is there but broken
                raise PluginError(f"built-in {kind} plugins: {exc}") from None
            # a kind with no built-ins: entry points may still name it
    if (kind, ref) in _registry:
        return _registry[(kind, ref)]
    eps = installed(kind)
    if ref in eps:
        return _from_entry_point(kind, ref, eps[ref])
    known = ", ".join(sorted(n for k, n in _registry if k == kind)) or "none"
    extra = f"; installed: {', '.join(sorted(eps))}" if eps else ""
    raise PluginError(f"no {kind} named {ref!r} (built-ins: {known}{extra}; "
                      f"or give 'module:attr')")


def create(kind: str, ref: str, options: dict[str, Any] | None = None) -> Any:
    """Resolve and instantiate; bad options are a PluginError too (they come from a config)."""
    factory = resolve(kind, ref)
    try:
        return factory(**(options or {}))
    except (TypeError, ValueError) as exc:
        raise PluginError(f"{kind} {ref!r}: {exc}") from None
