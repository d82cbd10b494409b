"""torch: a TorchScript file (``torch.jit.save``) or an exported program (``torch.export.save``;
``.pt2``, or any file TorchScript cannot read).

An exported program records its input shapes and dtypes, so instances are checked (400 naming
the instance) and warmed up; export it with a dynamic batch dimension
(``dynamic_shapes={"x": {0: torch.export.Dim("batch")}}``) or it takes only the batch size it was
traced with. A TorchScript file records neither unless it carries the extra file
``serve_gateway.json`` (``torch.jit.save(m, path, _extra_files={"serve_gateway.json": ...})``,
see ``input_note``: examples/adapters/save_torch.py does it); without it instances become float32,
a wrong shape is the model's 500, and there is no warm-up call. Calls run under
``torch.inference_mode()`` on the chosen device.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from gateway.worker.adapters.arrays import InputSpec
from gateway.worker.adapters.base import Adapter, log
from gateway.worker.adapters.devices import choose_device

INPUT_NOTE = "serve_gateway.json"     # TorchScript extra file: the inputs' names, dtypes, shapes


def input_note(inputs: list[tuple[str, str, list[int | None]]]) -> str:
    """The ``serve_gateway.json`` text for (name, dtype, instance shape) inputs."""
    return json.dumps({"inputs": [{"name": n, "dtype": d, "shape": s} for n, d, s in inputs]})


def _read_note(text: str) -> list[InputSpec]:
    try:
        doc = json.loads(text)
        return [InputSpec(str(i["name"]), np.dtype(i["dtype"]),
                          tuple(None if d is None else int(d) for d in i["shape"]))
                for i in doc["inputs"]]
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"{INPUT_NOTE} in the TorchScript file is not valid: {exc}") from None


class TorchAdapter(Adapter):
    framework = "torch"

    def _open(self) -> None:
        import torch

        self.device, why = choose_device(self.requested_device, os.environ,
                                         torch.cuda.is_available())
        log.info("torch device %s: %s", self.device, why)
        module: Any
        if self.path.suffix == ".pt2":
            module = self._open_exported()
        else:
            extra = {INPUT_NOTE: ""}
            try:
                module = torch.jit.load(str(self.path), map_location=self.device,
                                        _extra_files=extra)
            except RuntimeError as jit_error:
                try:
                    module = self._open_exported()
                except Exception:  # noqa: BLE001 (not a program either: the TorchScript error says more)
                    raise jit_error from None
            else:
                module.eval()
                self.inputs = (_read_note(extra[INPUT_NOTE]) if extra[INPUT_NOTE]
                               else [InputSpec("input", np.dtype(np.float32), None)])
        self.module = module

    def _open_exported(self) -> Any:
        import torch

        program = torch.export.load(str(self.path))
        user_inputs = set(program.graph_signature.user_inputs)
        self.inputs = []
        for node in program.graph.nodes:
            if node.op != "placeholder" or node.name not in user_inputs:
                continue
            val = node.meta.get("val")
            dtype = np.dtype(str(val.dtype).removeprefix("torch.")) if val is not None else None
            dims = tuple(d if isinstance(d, int) else None for d in val.shape[1:]) \
                if val is not None else None
            self.inputs.append(InputSpec(node.name, dtype, dims))
        # the exported module cannot .eval(): it was traced in whatever mode export saw
        return program.module().to(self.device)

    def _run(self, feeds: dict[str, np.ndarray]) -> Any:
        import torch

        with torch.inference_mode():
            args = [torch.from_numpy(a).to(self.device) for a in feeds.values()]
            return _to_numpy(self.module(*args))


def _to_numpy(out: Any) -> Any:
    """Tensors (possibly in tuples, lists, dicts) -> numpy, on the CPU."""
    if hasattr(out, "detach"):
        return out.detach().cpu().numpy()
    if isinstance(out, dict):
        return {k: _to_numpy(v) for k, v in out.items()}
    if isinstance(out, (list, tuple)):
        return tuple(_to_numpy(v) for v in out)
    return out
