"""Header and cookie rules: exact and whole-value regex, all conditions of a match, first wins."""

from __future__ import annotations

from collections.abc import Mapping

from multidict import CIMultiDict

from gateway.dataplane.match import NO_COOKIES, Rules, parse_cookies
from gateway.spec.models import MatchSpec, RuleSpec


def match(**spec: object) -> Rules:
    """One match, as the data plane compiles it: a single rule."""
    return Rules([RuleSpec(match=MatchSpec.model_validate(spec), to="hit")])


def check(m: Rules, headers: dict[str, str] | None = None,
          cookies: Mapping[str, str] = NO_COOKIES) -> bool:
    return m.first(CIMultiDict(headers or {}), cookies) == "hit"


def test_exact_header_is_case_insensitive_on_the_name_only() -> None:
    m = match(header={"X-Model-Version": "v2"})
    assert check(m, {"x-model-version": "v2"})
    assert check(m, {"X-MODEL-VERSION": "v2"})
    assert not check(m, {"x-model-version": "V2"})
    assert not check(m, {"x-model-version": "v22"})
    assert not check(m)


def test_regex_must_match_the_whole_value() -> None:
    m = match(header={"x-user": {"regex": "qa-[0-9]+"}})
    assert check(m, {"x-user": "qa-17"})
    assert not check(m, {"x-user": "qa-17x"})
    assert not check(m, {"x-user": "not-qa-17"})


def test_cookie_conditions() -> None:
    m = match(cookie={"ab-group": "beta"})
    assert check(m, cookies={"ab-group": "beta"})
    assert not check(m, cookies={"ab-group": "alpha"})
    assert not check(m, {"ab-group": "beta"})        # a header of that name is not the cookie


def test_every_condition_must_hold() -> None:
    m = match(header={"x-a": "1", "x-b": {"regex": "y.*"}}, cookie={"c": "z"})
    full = {"x-a": "1", "x-b": "yes"}
    assert check(m, full, {"c": "z"})
    assert not check(m, full)
    assert not check(m, {"x-a": "1"}, {"c": "z"})
    assert not check(m, {**full, "x-a": "2"}, {"c": "z"})


def test_yaml_numbers_match_their_text() -> None:
    assert check(match(header={"x-version": 2}), {"x-version": "2"})


def test_cookie_header_parsing() -> None:
    assert parse_cookies(None) == {} and parse_cookies("") == {}
    assert parse_cookies('a=1; b="two words";c=3=3; junk; =x; a=again') == \
        {"a": "1", "b": "two words", "c": "3=3"}


def test_first_matching_rule_wins() -> None:
    rules = Rules([RuleSpec.model_validate(r) for r in (
        {"match": {"header": {"x-model-version": "v2"}}, "to": "v2"},
        {"match": {"cookie": {"ab-group": "beta"}}, "to": "v3"},
        {"match": {"header": {"x-model-version": {"regex": "v.*"}}}, "to": "v4"},
    )])
    h = CIMultiDict
    assert rules.first(h({"x-model-version": "v2"}), {"ab-group": "beta"}) == "v2"
    assert rules.first(h(), {"ab-group": "beta"}) == "v3"
    assert rules.first(h({"x-model-version": "v9"})) == "v4"
    assert rules.first(h()) is None
    assert rules.cookies and not Rules(rules_without_cookies()).cookies
    assert not Rules([]) and rules


def rules_without_cookies() -> list[RuleSpec]:
    return [RuleSpec.model_validate({"match": {"header": {"x": "1"}}, "to": "v1"})]
