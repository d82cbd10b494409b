import pytest

from gateway.dataplane.paths import normalise
from gateway.errors import BadRequest


@pytest.mark.parametrize("raw,expected", [
    ("/v1/echo", "/v1/echo"),
    ("/a/../b", "/b"),
    ("//v1//echo", "/v1/echo"),
    ("/v1/echo/%2e%2e/%2E%2E/admin", "/admin"),
    ("/v1/echo/..%2f..", None),
    ("/v1/%65cho", "/v1/echo"),
    ("/x/./y/", "/x/y/"),
    ("/../../..", "/"),
    ("/a/%20b", "/a/%20b"),          # reserved / non-unreserved stay encoded
    ("/a/%2fb", None),
    ("/a/%5cb", None),
    ("/a\\..\\b", None),
    ("/a/%00", None),
])
def test_normalise(raw: str, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(BadRequest):
            normalise(raw)
    else:
        assert normalise(raw) == expected
