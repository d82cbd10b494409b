"""Config fuzz (issue #14, item 4): seeded mutations of every config/*.yaml either validate or
are refused with problems that each name a YAML path or a line, never an internal error."""

from __future__ import annotations

import pytest

from gateway.errors import ConfigError
from gateway.spec import parse_spec
from tests.fuzzconfig import CONFIGS, mutants


def test_every_shipped_config_is_fuzzed() -> None:
    assert len(CONFIGS) >= 10


@pytest.mark.parametrize("seed", [14, 1414])
def test_mutated_configs_validate_or_are_refused_with_a_path(seed: int) -> None:
    valid = refused = 0
    for name, text in mutants(per_file=40, seed=seed):
        try:
            spec = parse_spec(text, name)
        except ConfigError as exc:
            refused += 1
            assert exc.problems, name
            for p in exc.problems:
                assert "internal error" not in p.message, f"{name}: {p}\n{text}"
                assert p.path or p.line, f"{name}: {p} names neither a path nor a line\n{text}"
        else:
            valid += 1
            spec.digest()           # the hash the gateway publishes can carry every value
    assert valid > 20 and refused > 100, (valid, refused)
