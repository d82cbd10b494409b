"""ONNX through onnxruntime: CUDAExecutionProvider when the device is cuda (the
onnxruntime-gpu build has it), else the CPU provider.

Input names, element types and shapes come from the file: a model with one input takes plain
instances, one with several takes objects keyed by input name; dimensions the file leaves
symbolic (the batch, sequence lengths) accept any size. Several outputs give each prediction as
an object keyed by output name.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from gateway.worker.adapters.arrays import InputSpec
from gateway.worker.adapters.base import Adapter, log
from gateway.worker.adapters.devices import choose_device

# onnxruntime's type strings -> numpy
_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64,
           "tensor(float16)": np.float16, "tensor(int64)": np.int64, "tensor(int32)": np.int32,
           "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
           "tensor(string)": np.str_}


class OnnxAdapter(Adapter):
    framework = "onnx"

    def _open(self) -> None:
        import onnxruntime as ort

        has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
        self.device, why = choose_device(self.requested_device, os.environ, has_cuda)
        log.info("onnx device %s: %s", self.device, why)
        providers = ["CPUExecutionProvider"]
        if self.device == "cuda":
            providers.insert(0, "CUDAExecutionProvider")
        self.session: Any = ort.InferenceSession(str(self.path), providers=providers)
        self.inputs = []
        for node in self.session.get_inputs():
            if node.type not in _DTYPES:
                raise TypeError(f"{self.path}: input {node.name} has type {node.type}, which "
                                f"JSON instances cannot carry")
            dims = tuple(d if isinstance(d, int) and d > 0 else None for d in node.shape[1:])
            self.inputs.append(InputSpec(node.name, np.dtype(_DTYPES[node.type]), dims))
        self.output_names = [o.name for o in self.session.get_outputs()]

    def _run(self, feeds: dict[str, np.ndarray]) -> Any:
        outputs = self.session.run(None, feeds)
        if len(outputs) == 1:
            return outputs[0]
        return dict(zip(self.output_names, outputs, strict=True))
