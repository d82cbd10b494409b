"""Adapters' pure parts: instances <-> arrays, device choice, warm-up before ready."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.worker import BadInput
from gateway.worker.adapters.arrays import InputSpec, stack, to_feeds, unstack
from gateway.worker.adapters.base import Adapter
from gateway.worker.adapters.devices import assigned_gpus, choose_device

F32 = np.dtype(np.float32)


def test_a_batch_becomes_one_array_of_the_model_dtype() -> None:
    x = stack([[1, 2, 3, 4], [5, 6, 7, 8]], InputSpec("x", F32, (4,)))
    assert x.dtype == np.float32 and x.shape == (2, 4)


@pytest.mark.parametrize("items, message", [
    ([[1, 2, 3, 4], [1, 2, 3]], "instance 1: shape [3], the model takes [4]"),
    ([[1, 2, 3, 4], ["a", 2, 3, 4]], "instance 1: not float32 array"),
    ([[1, 2, 3, 4], {"x": 1}], "instance 1: not float32 array"),
    ([[[1, 2, 3, 4]]], "instance 0: shape [1, 4], the model takes [4]"),
])
def test_a_bad_instance_is_named(items: list[Any], message: str) -> None:
    with pytest.raises(BadInput, match=r"^" + message.replace("[", r"\[").replace("]", r"\]")):
        stack(items, InputSpec("x", F32, (4,)))


def test_unknown_shape_still_needs_one_shape_per_batch() -> None:
    spec = InputSpec("x", F32, None)
    assert stack([[1, 2], [3, 4]], spec).shape == (2, 2)
    with pytest.raises(BadInput, match="instance 2: shape \\[3\\], instance 0 has \\[2\\]"):
        stack([[1, 2], [3, 4], [5, 6, 7]], spec)


def test_symbolic_dimensions_take_any_size() -> None:
    spec = InputSpec("tokens", np.dtype(np.int64), (None,))
    assert stack([[1, 2, 3], [4, 5, 6]], spec).shape == (2, 3)


def test_several_inputs_take_objects_keyed_by_name() -> None:
    inputs = [InputSpec("a", F32, (2,)), InputSpec("b", np.dtype(np.int64), ())]
    feeds = to_feeds([{"a": [1, 2], "b": 3}, {"a": [4, 5], "b": 6}], inputs)
    assert feeds["a"].shape == (2, 2) and feeds["b"].tolist() == [3, 6]
    with pytest.raises(BadInput, match="instance 1: missing input b"):
        to_feeds([{"a": [1, 2], "b": 3}, {"a": [4, 5]}], inputs)
    with pytest.raises(BadInput, match="input b: instance 0: shape \\[2\\]"):
        to_feeds([{"a": [1, 2], "b": [3, 4]}], inputs)


def test_outputs_split_per_instance() -> None:
    assert unstack(np.array([[1.0, 2.0], [3.0, 4.0]]), 2) == [[1.0, 2.0], [3.0, 4.0]]
    assert unstack(np.array([0, 2]), 2) == [0, 2]
    assert unstack({"label": np.array([1, 0]), "p": np.array([0.9, 0.6])}, 2) == \
        [{"label": 1, "p": 0.9}, {"label": 0, "p": 0.6}]
    assert unstack((np.array([1, 2]), np.array([[3], [4]])), 2) == [[1, [3]], [2, [4]]]
    with pytest.raises(RuntimeError, match="returned 3 rows for a batch of 2"):
        unstack(np.zeros((3, 1)), 2)


@pytest.mark.parametrize("value, ids", [
    (None, []), ("", []), ("-1", []), ("0", ["0"]), ("1,3", ["1", "3"]), (" 2 , ", ["2"]),
])
def test_assigned_gpus(value: str | None, ids: list[str]) -> None:
    env = {} if value is None else {"CUDA_VISIBLE_DEVICES": value}
    assert assigned_gpus(env) == ids


def test_device_follows_the_assignment() -> None:
    gpu = {"CUDA_VISIBLE_DEVICES": "1"}
    assert choose_device("auto", gpu, cuda_available=True)[0] == "cuda"
    assert choose_device("auto", {}, cuda_available=True)[0] == "cpu"
    device, why = choose_device("auto", gpu, cuda_available=False)
    assert device == "cpu" and "no CUDA support" in why
    assert choose_device("cpu", gpu, cuda_available=True)[0] == "cpu"
    with pytest.raises(RuntimeError, match="--device cuda"):
        choose_device("cuda", gpu, cuda_available=False)


class Recording(Adapter):
    framework = "fake"

    def __init__(self, path: str, shape: tuple[int | None, ...] | None) -> None:
        super().__init__(path)
        self.shape = shape
        self.calls: list[np.ndarray] = []

    def _open(self) -> None:
        self.inputs = [InputSpec("x", F32, self.shape)]

    def _run(self, feeds: dict[str, np.ndarray]) -> Any:
        self.calls.append(feeds["x"])
        return feeds["x"].sum(axis=1)


def test_load_ends_with_a_warm_up_call_on_a_zero_instance(tmp_path: Path) -> None:
    (tmp_path / "m").write_bytes(b"")
    model = Recording(str(tmp_path / "m"), (3, None))
    model.load()
    assert [c.tolist() for c in model.calls] == [[[[0.0], [0.0], [0.0]]]]
    assert model.warmup_seconds is not None
    assert model.predict([[[1], [2], [3]], [[4], [5], [6]]]) == [[6.0], [15.0]]


def test_no_warm_up_without_a_known_shape(tmp_path: Path) -> None:
    (tmp_path / "m").write_bytes(b"")
    model = Recording(str(tmp_path / "m"), None)
    model.load()
    assert model.calls == [] and model.warmup_seconds is None


def test_a_missing_model_file_fails_the_load(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="fake model file not found: .*nothing.bin"):
        Recording(str(tmp_path / "nothing.bin"), None).load()
