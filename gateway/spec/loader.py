"""YAML text -> plain Python data plus a map from YAML path to line number.

PyYAML's composer keeps the position of every node; we walk the node tree ourselves so that
every error later found by validation can name the line it came from. Duplicate keys are an
error here (PyYAML silently keeps the last one).
"""

from __future__ import annotations

from typing import Any

import yaml

from gateway.errors import ConfigError, ConfigProblem

Path = tuple[str | int, ...]


def load_yaml(text: str, source: str = "") -> tuple[Any, dict[Path, int]]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([ConfigProblem("", f"YAML syntax error: {problem}", line)], source)
    lines: dict[Path, int] = {}
    problems: list[ConfigProblem] = []
    if node is None:
        return {}, lines
    data = _Builder(lines, problems).build(node, ())
    if problems:
        raise ConfigError(problems, source)
    return data, lines


class _Builder:
    def __init__(self, lines: dict[Path, int], problems: list[ConfigProblem]) -> None:
        self.lines = lines
        self.problems = problems
        self.scalars = yaml.SafeLoader("")  # resolves a scalar's tag to int / bool / float ...

    def build(self, node: yaml.Node, path: Path) -> Any:
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(child, path + (i,)) for i, child in enumerate(node.value)]
        return self.scalars.construct_object(node, deep=True)

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                self.problems.append(ConfigProblem(dotted(path), "keys must be scalars", key_line))
                continue
            key = str(self.scalars.construct_object(key_node))
            if key in out:
                self.problems.append(ConfigProblem(dotted(path + (key,)), "duplicate key", key_line))
                continue
            out[key] = self.build(value_node, path + (key,))
            self.lines[path + (key,)] = key_line
        return out


def dotted(path: Path) -> str:
    return ".".join(str(p) for p in path)


def line_of(lines: dict[Path, int], path: Path) -> int | None:
    """The line of path, or of its nearest ancestor present in the YAML."""
    p = tuple(path)
    while p:
        if p in lines:
            return lines[p]
        p = p[:-1]
    return lines.get(())
