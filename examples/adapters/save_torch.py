"""Write a tiny torch model for ``--adapter torch``: an exported program (``.pt2``, the default)
or TorchScript (``--torchscript``, any other suffix).

    python -m examples.adapters.save_torch models/mlp.pt2
    serve-gateway up config/adapter-torch.yaml
    curl -s localhost:8080/v1/torch-mlp -d '{"instances": [[0.1, 0.2, 0.3, 0.4]]}'

The batch dimension is exported as dynamic, so the gateway's batches of any size take one call.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def build() -> Any:
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()


def save(path: str | Path, torchscript: bool = False) -> Path:
    import torch

    model = build()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(2, 4)
    if torchscript:
        from gateway.worker.adapters.torch_adapter import INPUT_NOTE, input_note

        # TorchScript keeps no input shapes: the note lets the adapter check instances and warm up
        note = input_note([("x", "float32", [4])])
        torch.jit.save(torch.jit.trace(model, example), str(path), _extra_files={INPUT_NOTE: note})
    else:
        batch = torch.export.Dim("batch")
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(path))
    return path


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--torchscript"]
    print(save(args[0] if args else "models/mlp.pt2", torchscript="--torchscript" in sys.argv))
