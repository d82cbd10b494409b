"""Header and cookie predicates, compiled once per routing table.

A rule's ``match`` is a conjunction: every header and cookie condition must hold. A condition is
an exact string or a regex that must match the whole value (``re.fullmatch``, as Envoy's
``safe_regex`` does), so ``beta`` never matches ``not-beta``. Regexes are compiled here, when the
table is built, never per request.

Cookies are parsed here, once per request and only when a rule or a sticky cookie needs them: an
``http.cookies.SimpleCookie`` costs about 5 us even with no Cookie header, a tenth of the whole
request's budget.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from gateway.spec.models import MatchSpec, RuleSpec, ValueMatch

Test = Callable[[str], object]   # truthy when the value matches


NO_COOKIES: Mapping[str, str] = {}


class RequestView(Protocol):
    """What version choice reads from a request; the data plane's ``http1msg.Request`` (whose
    ``headers`` is a ``HeaderView``) satisfies it. ``headers`` must be case-insensitive (or keyed
    by lower-case names)."""

    @property
    def headers(self) -> Mapping[str, str]: ...


def parse_cookies(header: str | None) -> Mapping[str, str]:
    """``a=1; b="two"`` -> {"a": "1", "b": "two"}; the first of a repeated name wins (browsers
    send the most specific path first, RFC 6265 5.4)."""
    if not header:
        return NO_COOKIES
    out: dict[str, str] = {}
    for part in header.split(";"):
        name, sep, value = part.partition("=")
        if not sep:
            continue
        name = name.strip()
        if name and name not in out:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            out[name] = value
    return out


def value_test(spec: ValueMatch) -> Test:
    if spec.exact is not None:
        return spec.exact.__eq__
    assert spec.regex is not None
    return re.compile(spec.regex).fullmatch


Condition = tuple[bool, str, Test]   # (from the cookies?, name, test)


def _conditions(spec: MatchSpec) -> tuple[Condition, ...]:
    """All conditions, cheapest first so a failing match fails early: exact before regex,
    cookies (a plain dict) before headers (a case-insensitive multidict)."""
    conds = [(False, name.lower(), v) for name, v in spec.header.items()] + \
            [(True, name, v) for name, v in spec.cookie.items()]
    conds.sort(key=lambda c: (c[2].regex is not None, not c[0]))
    return tuple((cookie, name, value_test(v)) for cookie, name, v in conds)


class Rules:
    """Ordered rules; ``first`` returns the target version of the first that matches."""

    __slots__ = ("cookies", "rules")

    def __init__(self, specs: Sequence[RuleSpec]) -> None:
        self.rules = tuple((_conditions(r.match), r.to) for r in specs)
        self.cookies = any(r.match.cookie for r in specs)   # do they need the Cookie header?

    def __bool__(self) -> bool:
        return bool(self.rules)

    def first(self, headers: Mapping[str, str], cookies: Mapping[str, str] = NO_COOKIES
              ) -> str | None:
        """``cookies``: ``parse_cookies`` of the request's Cookie header (when ``self.cookies``)."""
        for conds, to in self.rules:
            # all conditions of a rule, inline (no call): this runs for every request of a
            # service with rules
            for from_cookies, name, test in conds:
                value = (cookies if from_cookies else headers).get(name)
                if value is None or not test(value):
                    break
            else:
                return to
        return None
