"""The shipped examples run one after another, as the README shows: every rollout example has a
state_dir of its own, so one example's finished rollout of service `echo` (journaled in its
state_dir) is never taken for the next example's ("v2 already serves", promote/undo refused)."""

from __future__ import annotations

from gateway.spec import load_spec
from tests.helpers import REPO_ROOT


def test_each_rollout_example_has_its_own_state_dir() -> None:
    dirs: dict[str, str] = {}
    for path in sorted((REPO_ROOT / "config").glob("*.yaml")):
        if path.name in ("broken.yaml",):
            continue
        spec = load_spec(path)
        if any(svc.rollout is not None for svc in spec.services.values()):
            dirs[path.name] = spec.gateway.state_dir
    assert len(dirs) >= 6, dirs
    others = {load_spec(p).gateway.state_dir for p in (REPO_ROOT / "config").glob("*.yaml")
              if p.name not in dirs and p.name != "broken.yaml"}
    assert len(set(dirs.values())) == len(dirs), dirs
    assert not set(dirs.values()) & others, (dirs, others)
