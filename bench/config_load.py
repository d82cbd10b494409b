"""Config load time: YAML -> validated Spec for every shipped config/*.yaml (what `validate`,
`up` and each reload pay). Prints the best of 7 rounds as ms per config, as JSON.

    .venv/bin/python bench/config_load.py
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from gateway.errors import ConfigError
from gateway.spec import parse_spec

CONFIG = Path(__file__).resolve().parent.parent / "config"


def main(rounds: int = 7, repeat: int = 20) -> dict[str, float]:
    texts = []
    for path in sorted(CONFIG.glob("*.yaml")):
        try:
            parse_spec(path.read_text())
        except ConfigError:
            continue                       # broken.yaml: refused on purpose
        texts.append(path.read_text())
    best = float("inf")
    for _ in range(rounds):
        began = time.perf_counter()
        for _ in range(repeat):
            for text in texts:
                parse_spec(text)
        best = min(best, (time.perf_counter() - began) / (repeat * len(texts)))
    return {"configs": len(texts), "ms_per_config": round(best * 1000, 3)}


if __name__ == "__main__":
    print(json.dumps(main()))
