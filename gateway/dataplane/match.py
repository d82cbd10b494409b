"""Header and cookie predicates, compiled once per routing table.

A rule's ``match`` is a conjunction: every header and cookie condition must hold. A condition is
an exact string or a regex that must match the whole value (``re.fullmatch``, as Envoy's
``safe_regex`` does), so ``beta`` never matches ``not-beta``. Regexes are compiled here, when the
table is built, never per request. Cookies are parsed only when a rule asks for one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from gateway.spec.models import MatchSpec, RuleSpec, ValueMatch

Test = Callable[[str], object]   # truthy when the value matches


class RequestView(Protocol):
    """What the predicates read from a request; aiohttp's request satisfies it. ``headers``
    must be case-insensitive (or keyed by lower-case names)."""

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def cookies(self) -> Mapping[str, str]: ...


def value_test(spec: ValueMatch) -> Test:
    if spec.exact is not None:
        return spec.exact.__eq__
    assert spec.regex is not None
    return re.compile(spec.regex).fullmatch


class Match:
    """One compiled ``match``: all conditions must hold."""

    __slots__ = ("headers", "cookies")

    def __init__(self, spec: MatchSpec) -> None:
        self.headers = tuple((name.lower(), value_test(v)) for name, v in spec.header.items())
        self.cookies = tuple((name, value_test(v)) for name, v in spec.cookie.items())

    def __call__(self, request: RequestView) -> bool:
        if self.headers:
            headers = request.headers
            for name, test in self.headers:
                value = headers.get(name)
                if value is None or not test(value):
                    return False
        if self.cookies:
            cookies = request.cookies
            for name, test in self.cookies:
                value = cookies.get(name)
                if value is None or not test(value):
                    return False
        return True


class Rules:
    """Ordered rules; ``first`` returns the target version of the first that matches."""

    __slots__ = ("rules",)

    def __init__(self, specs: Sequence[RuleSpec]) -> None:
        self.rules = tuple((Match(r.match), r.to) for r in specs)

    def __bool__(self) -> bool:
        return bool(self.rules)

    def first(self, request: RequestView) -> str | None:
        for match, to in self.rules:
            if match(request):
                return to
        return None
