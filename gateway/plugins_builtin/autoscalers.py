"""Built-in autoscaling policy plugins (``autoscale: {policy: NAME}``).

A plugin is Lightning's ``scale(replicas, metrics) -> int``; see ``gateway/control/autoscale.py``
for the keys of ``metrics`` and how the answer is clamped. Each plugin lives in its own module
and registers itself there; importing this module (the registry does, on the first lookup of
the ``autoscaler`` kind) makes every built-in one known.
"""

from __future__ import annotations

from gateway.plugins_builtin import queue_latency  # noqa: F401  (registers "queue_latency")
