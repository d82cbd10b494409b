"""The `traffic:` section: shapes, and cross-field checks that name the exact YAML path."""

from __future__ import annotations

import pytest

from gateway.errors import ConfigError
from gateway.spec import parse_spec

BASE = """
services:
  ab:
    route: /ab
    versions:
      v1: {command: "w {port}"}
      v2: {command: "w {port}"}
    traffic:
      weights: {v1: 9, v2: 1}
"""


def problems(extra: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_spec(BASE + extra, "t.yaml")
    return [str(p) for p in e.value.problems]


def test_full_traffic_section_parses() -> None:
    spec = parse_spec(BASE + """
      rules:
        - match: {header: {x-model-version: v2, x-n: 3}, cookie: {g: {regex: "b.*"}}}
          to: v2
      sticky: {cookie: sgw, max_age: 1h}
      mirror: {to: v2, percent: 12.5, comparator: numeric, options: {tolerance: 0.1}}
      served_by_header: false
""")
    t = spec.services["ab"].traffic
    assert t.rules[0].match.header["x-n"].exact == "3"
    assert t.rules[0].match.cookie["g"].regex == "b.*"
    assert t.sticky is not None and t.sticky.max_age == 3600
    assert t.mirror is not None and t.mirror.percent == 12.5 and not t.served_by_header


def test_rules_and_mirror_must_name_versions_and_compile() -> None:
    assert problems("""
      rules:
        - match: {header: {x-v: {regex: "a(("}}}
          to: v9
      mirror: {to: v3, percent: 10, comparator: nope}
""") == [
        "services.ab.traffic.rules.0.to: no version named v9 (versions: v1, v2) (line 13)",
        ("services.ab.traffic.rules.0.match.header.x-v.regex: bad regex: missing ), unterminated "
        "subpattern at position 2 (line 12)"),
        "services.ab.traffic.mirror.to: no version named v3 (versions: v1, v2) (line 14)",
        ("services.ab.traffic.mirror.comparator: no comparator named 'nope' (built-ins: argmax, "
        "exact, numeric; or give 'module:attr') (line 14)"),
    ]


def test_shapes_are_checked() -> None:
    assert problems("""
      rules:
        - match: {header: {x-v: {regex: a, exact: b}}}
          to: v2
        - match: {}
          to: v2
      sticky: {cookie: a, header: b}
      mirror: {to: v2, percent: 120, options: {tolerance: 1}}
""") == [
        ("services.ab.traffic.rules.0.match.header.x-v: give exactly one of 'exact' or 'regex' "
        "(line 12)"),
        ("services.ab.traffic.rules.1.match: a match needs at least one header or cookie "
        "condition (line 14)"),
        "services.ab.traffic.sticky: give exactly one of 'cookie' or 'header' (line 16)",
        "services.ab.traffic.mirror.percent: must be <= 100 (line 17)",
    ]


def test_bad_comparator_options_are_a_config_error() -> None:
    [p] = problems("      mirror: {to: v2, percent: 5, options: {tolerance: 1}}\n")
    assert p.startswith("services.ab.traffic.mirror.comparator: comparator 'exact': ")
