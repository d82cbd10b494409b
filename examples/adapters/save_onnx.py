"""Write a tiny ONNX model for ``--adapter onnx``, built with the onnx helper API (no torch):
``scores = x @ W + b`` and ``label = argmax(scores)``, with a symbolic batch dimension.

    python -m examples.adapters.save_onnx models/linear.onnx
    serve-gateway up config/adapter-onnx.yaml
    curl -s localhost:8080/v1/linear -d '{"instances": [[1, 0, 0, 0], [0, 0, 0, 1]]}'
    # {"predictions":[{"scores":[...],"label":0},{"scores":[...],"label":2}]}
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

W = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 2.0]], np.float32)
B = np.array([0.1, 0.0, -0.1], np.float32)


def save(path: str | Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]),
         helper.make_node("Add", ["xw", "b"], ["scores"]),
         helper.make_node("ArgMax", ["scores"], ["label"], axis=1, keepdims=0)],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 3]),
         helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"])],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "b")])
    # opset 17 / IR 8: old enough for any onnxruntime of the last years
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


if __name__ == "__main__":
    print(save(sys.argv[1] if len(sys.argv) > 1 else "models/linear.onnx"))
