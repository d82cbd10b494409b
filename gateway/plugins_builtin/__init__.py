"""First-party plugins, one small module per kind (``comparators.py`` ...).

Each module registers its plugins with ``gateway.plugins.register(kind, name)``; the registry
imports ``gateway.plugins_builtin.<kind>s`` on first lookup of that kind. They live inside the
``gateway`` package so that the wheel installs no generic top-level ``plugins`` package (which
would clash with any other project's). See ``gateway/plugins.py``.
"""
