"""First-party plugins, one small module per kind (``comparators.py`` ...).

Each module registers its plugins with ``gateway.plugins.register(kind, name)``; the registry
imports ``plugins.<kind>s`` on first lookup of that kind. See ``gateway/plugins.py``.
"""
