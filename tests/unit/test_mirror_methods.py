"""traffic.mirror.methods: the methods copied and compared (and so counted by a shadow analysis)."""

from __future__ import annotations

import pytest

from gateway.dataplane.mirror import eligible
from gateway.errors import ConfigError
from gateway.spec import parse_spec
from tests.helpers import REPO_ROOT

SHADOW = (REPO_ROOT / "config" / "rollout-shadow.yaml").read_text()


def test_shipped_shadow_example_compares_inference_posts_only() -> None:
    mirror = parse_spec(SHADOW).services["echo"].traffic.mirror
    assert mirror is not None and mirror.methods == ["POST"]
    methods = frozenset(mirror.methods)
    assert eligible("POST", True, 10, methods, 1 << 20)
    assert not eligible("GET", False, None, methods, 1 << 20)


@pytest.mark.parametrize(("edit", "message"), [
    (("mirror_post: true", "mirror_post: false"),
     "traffic.mirror.methods: POST is copied only when the service says"),
    (("methods: [POST]", "methods: [PUT]"), "traffic.mirror.methods.0"),
    (("methods: [POST]", "methods: []"), "traffic.mirror.methods"),
])
def test_bad_methods_are_refused_with_their_path(edit: tuple[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        parse_spec(SHADOW.replace(*edit))
