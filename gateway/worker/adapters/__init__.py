"""Adapters: serve a saved model with no Python of the user's.

``serve-gateway worker --adapter sklearn|torch|onnx --model PATH`` serves

- sklearn: a joblib (``.joblib``, anything else) or pickle (``.pkl``, ``.pickle``) file of an
  estimator or pipeline with ``predict``;
- torch: a TorchScript file (``torch.jit.save``) or an exported program (``torch.export.save``,
  ``.pt2``);
- onnx: an ONNX file, run by onnxruntime.

Each adapter is a model class of the worker SDK (``load()``, ``predict(items) -> list``): a batch
of instances becomes one array, one model call, one prediction per instance (``arrays.py``);
``load()`` ends with a warm-up call, so ``/ready`` answers 200 only once the first real request
costs what the next ones will; the device follows the replica's GPU assignment (``devices.py``).
The frameworks are extras: ``pip install 'serve-gateway[sklearn]'`` (or ``[torch]``, ``[onnx]``).
"""

from __future__ import annotations

MODEL_ENV = "SGW_ADAPTER_MODEL"      # how `worker --model` reaches the adapter's constructor
DEVICE_ENV = "SGW_ADAPTER_DEVICE"

# adapter name -> (worker target, the extra that installs its framework, the module it needs)
ADAPTERS: dict[str, tuple[str, str, str]] = {
    "sklearn": ("gateway.worker.adapters.sklearn_adapter:SklearnAdapter", "sklearn", "sklearn"),
    "torch": ("gateway.worker.adapters.torch_adapter:TorchAdapter", "torch", "torch"),
    "onnx": ("gateway.worker.adapters.onnx_adapter:OnnxAdapter", "onnx", "onnxruntime"),
}
