"""Seeded mutations of the shipped config/*.yaml for the config fuzz tests (issue #14, item 4):
text edits (a line dropped, doubled, re-indented, the file truncated) and value edits (a
value swapped for a hostile one: zero, negative, huge, non-finite, wrong type, deeply nested,
an alias bomb, a merge key)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import yaml

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "config").glob("*.yaml"))

HOSTILE: list[Any] = [0, -1, 1, 10**20, -(10**20), 1e308, "1e400", float("nan"), float("inf"),
                      "", "0s", "-1s", "999999999h", "99999999999999999999TiB", None, True, [], {},
                      "x" * 300, "deep",
                      {"<<": 5}, "{port}", "/", "//..", "v9", 1000, 500, 0.0001]


TAGS = ["!!int", "!!float", "!!bool", "!!timestamp", "!!binary", "!!map", "!!seq", "!!null",
        "!!str", "!foo", "!!python/object:os.system"]


def _deep(n: int) -> Any:
    value: Any = []
    for _ in range(n):
        value = [value]
    return value


def _paths(data: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [at]
    if isinstance(data, dict):
        for k, v in data.items():
            out += _paths(v, at + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += _paths(v, at + (i,))
    return out


def _set(data: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    data[path[0]] = _set(data[path[0]], path[1:], value)
    return data


def mutate_text(text: str, rng: random.Random) -> str:
    lines = text.splitlines(keepends=True)
    i = rng.randrange(len(lines))
    kind = rng.randrange(8)
    if kind == 0:
        del lines[i]
    elif kind == 1:
        lines.insert(i, lines[i])
    elif kind == 2:
        lines[i] = " " * rng.choice([1, 2, 4]) + lines[i]
    elif kind == 3:
        return text[:rng.randrange(len(text))]
    elif kind == 4:
        j = rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    elif kind == 5:
        pos = rng.randrange(len(text))
        return text[:pos] + rng.choice(["[", "]", "{", "}", ":", "&", "*", "!", "|", ">", "-",
                                        "#", "'", '"', "\t", "\x00", "!!int ", "!!bool ",
                                        "!!timestamp ", "!!map ", "!foo "]) + text[pos:]
    elif kind == 6:   # an explicit tag on a value: PyYAML may fail to apply it
        lines[i] = lines[i].replace(": ", ": " + rng.choice(TAGS) + " ", 1)
    else:
        lines[i] = lines[i].replace(": ", ": *x ", 1) if rng.random() < 0.5 else \
            "x-a: &x {route: /m, retries: 9}\n" + lines[i].replace(": ", ":\n  <<: *x\n  k: ", 1)
    return "".join(lines)


def mutate_value(text: str, rng: random.Random) -> str:
    data = yaml.safe_load(text)
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(_paths(data))
        value = rng.choice(HOSTILE)
        data = _set(data, path, _deep(80) if value == "deep" else value)
    out = yaml.safe_dump(data, sort_keys=False)
    if rng.random() < 0.2:   # share a hostile value through an anchor and a merge key
        out = "x-defaults: &d {timeouts: {request: " + str(rng.choice([0, -1, "5s"])) + "}}\n" \
            + out.replace("    route:", "    <<: *d\n    route:", 1)
    return out


def mutants(per_file: int, seed: int = 14) -> list[tuple[str, str]]:
    """(name, text) for ``per_file`` mutants of every shipped config, the same on every run."""
    rng = random.Random(seed)
    out = []
    for path in CONFIGS:
        text = path.read_text()
        for n in range(per_file):
            mutate = mutate_text if n % 2 else mutate_value
            out.append((f"{path.name}#{n}", mutate(text, rng)))
    return out
