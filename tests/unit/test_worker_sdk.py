"""Worker SDK pure logic and the example models, in-process (no sockets)."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from examples.models.echo import Echo
from examples.models.mlp import MLP
from gateway.worker import BadInput, main
from gateway.worker.server import ModelError, encode_predictions, load_target, parse_instances


def test_single_document_is_a_batch_of_one() -> None:
    assert parse_instances(b'{"x": 1}') == [{"x": 1}]
    assert parse_instances(b"[1, 2]") == [[1, 2]]
    assert parse_instances(b"3") == [3]


def test_instances_are_the_batch() -> None:
    assert parse_instances(b'{"instances": [1, {"a": 2}]}') == [1, {"a": 2}]
    assert parse_instances(b'{"instances": []}') == []


@pytest.mark.parametrize("body, message", [
    (b"{nope", "not valid JSON"),
    (b"", "not valid JSON"),
    (b'{"instances": {"a": 1}}', '"instances" must be a list, got dict'),
    (b'{"instances": null}', "got NoneType"),
])
def test_bad_bodies_are_bad_input(body: bytes, message: str) -> None:
    with pytest.raises(BadInput, match=message):
        parse_instances(body)


def test_encode_checks_count_and_type() -> None:
    assert orjson.loads(encode_predictions([1, {"a": 2}], 2)) == {"predictions": [1, {"a": 2}]}
    assert orjson.loads(encode_predictions(np.arange(3), 3)) == {"predictions": [0, 1, 2]}
    with pytest.raises(ModelError, match="returned 1 predictions for 2 instances"):
        encode_predictions([1], 2)
    with pytest.raises(ModelError, match="must return a list, got dict"):
        encode_predictions({"a": 1}, 1)
    with pytest.raises(ModelError, match="not JSON serializable"):
        encode_predictions([object()], 1)


def test_load_target_class_and_factory() -> None:
    assert isinstance(load_target("examples.models.echo:Echo"), Echo)
    assert isinstance(load_target(f"{__name__}:_factory"), Echo)
    with pytest.raises(TypeError, match="without a predict"):
        load_target(f"{__name__}:_NoPredict")
    with pytest.raises(ModuleNotFoundError):
        load_target("no_such_module_xyz:Model")


def _factory() -> Echo:
    return Echo()


class _NoPredict:
    pass


@pytest.mark.parametrize("argv", [["no-colon", "--port", "1"], ["mod:"], ["mod:Cls"]])
def test_cli_rejects_bad_target_or_missing_port(argv: list[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PORT", raising=False)
    assert main(argv) == 2


def test_echo_tags_dicts_and_fails_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECHO_TAG", "v2")
    echo = Echo()
    echo.load()
    assert echo.predict([{"a": 1}, 5, [1]]) == [{"a": 1, "tag": "v2"}, 5, [1]]
    with pytest.raises(RuntimeError, match="^boom$"):
        echo.predict([{"a": 1}, {"fail": "boom"}])


@pytest.fixture(scope="module")
def mlp() -> MLP:
    model = MLP()
    model.load()
    return model


def test_mlp_batch_equals_single_calls(mlp: MLP) -> None:
    rng = np.random.default_rng(1)
    items = rng.standard_normal((4, 512)).tolist()
    batch = mlp.predict(items)
    assert len(batch) == 4 and all(len(row) == 16 for row in batch)
    singles = [mlp.predict([item])[0] for item in items]
    np.testing.assert_allclose(batch, singles, rtol=1e-4, atol=1e-4)


def test_mlp_weights_are_deterministic(mlp: MLP) -> None:
    other = MLP()
    other.load()
    item = [[0.5] * 512]
    assert other.predict(item) == mlp.predict(item)


@pytest.mark.parametrize("items, message", [
    ([[1.0] * 511], "list of 512 numbers; got 511 per instance"),
    ([1.0, 2.0], "got a scalar per instance"),
    ([[1.0] * 512, [1.0] * 3], "list of 512 numbers"),
    ([["x"] * 512], "list of 512 numbers"),
])
def test_mlp_wrong_shape_is_bad_input(mlp: MLP, items: list, message: str) -> None:
    with pytest.raises(BadInput, match=message):
        mlp.predict(items)
