"""Where an adapter runs its model: pure, so that unit tests cover every rule.

``auto`` (the default) is ``cuda`` when the gateway assigned this replica a GPU (it sets
``CUDA_VISIBLE_DEVICES``, see gateway/runtimes/gpus.py) and the framework can use one, else
``cpu``. An explicit ``cuda`` that cannot be honoured is an error: the operator asked for it.
"""

from __future__ import annotations

from collections.abc import Mapping

DEVICES = ("auto", "cpu", "cuda")


def assigned_gpus(env: Mapping[str, str]) -> list[str]:
    """The GPUs this process was given; [] when none (unset, empty, or "-1" / "none")."""
    value = env.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return []
    ids = [part.strip() for part in value.split(",") if part.strip()]
    if not ids or ids[0] in ("-1", "none", "NoDevFiles"):
        return []
    return ids


def choose_device(requested: str, env: Mapping[str, str], cuda_available: bool) -> tuple[str, str]:
    """(device, why) for a request of auto / cpu / cuda."""
    if requested not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {requested!r}")
    gpus = assigned_gpus(env)
    if requested == "cpu":
        return "cpu", "asked for cpu"
    if requested == "cuda":
        if not cuda_available:
            raise RuntimeError("--device cuda, but the framework sees no CUDA device "
                               f"(CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES')!r})")
        return "cuda", "asked for cuda"
    if not gpus:
        return "cpu", "no GPU assigned (CUDA_VISIBLE_DEVICES unset or empty)"
    if not cuda_available:
        return "cpu", (f"GPU {','.join(gpus)} assigned but the framework has no CUDA support "
                       "here (a CPU build?)")
    return "cuda", f"GPU {','.join(gpus)} assigned"
