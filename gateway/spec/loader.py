"""YAML text -> plain Python data plus a map from YAML path to line number.

PyYAML's composer keeps the position of every node; we walk the node tree ourselves so that
every error later found by validation can name the line it came from. Duplicate keys are an
error here (PyYAML silently keeps the last one).

No text can make this raise anything but ConfigError: the limits below stop PyYAML's composer
and this walk (both recursive) well before Python's recursion limit, and a value PyYAML cannot
construct is a problem with its path and line.

- Merge keys (``<<: *defaults``, ``<<: [*a, *b]``) are supported: keys written in the mapping
  win over merged ones, earlier merged mappings over later ones (YAML 1.1). A merged value's
  errors name the line where it is written (the anchored mapping).
- Top-level keys starting with ``x-`` are ignored (as in Compose files): the place for anchors.
- Nesting depth, the number of values after alias expansion (the "billion laughs") and integer
  size are bounded; so is the file's size (``MAX_BYTES``, checked by the caller that reads it).
"""

from __future__ import annotations

import math
from typing import Any

import yaml

from gateway.errors import ConfigError, ConfigProblem

Path = tuple[str | int, ...]

MAX_BYTES = 1 << 20        # a config file; real ones are a few KiB
MAX_DEPTH = 64             # nesting of mappings and sequences; real configs stay under 12
MAX_VALUES = 100_000       # values after alias expansion
MAX_INT = (1 << 63) - 1    # what the config hash (orjson) and the runtimes can carry
EXTENSION_PREFIX = "x-"
_MERGE = "tag:yaml.org,2002:merge"
_COLLECTIONS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")


def load_yaml(text: str, source: str = "") -> tuple[Any, dict[Path, int]]:
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise ConfigError([_syntax_problem(exc, text)], source) from None
    except _TooDeep as exc:
        raise ConfigError([ConfigProblem("", f"nested more than {MAX_DEPTH} levels deep",
                                         exc.line)], source) from None
    lines: dict[Path, int] = {}
    problems: list[ConfigProblem] = []
    if node is None:
        return {}, lines
    try:
        data = _Builder(lines, problems).build(node, ())
    except ConfigError as exc:          # a limit: stop the walk, keep what was found before
        problems += exc.problems
    if problems:
        raise ConfigError(list(dict.fromkeys(problems)), source)   # a merged value: once
    return data, lines


def _syntax_problem(exc: yaml.YAMLError, text: str) -> ConfigProblem:
    if isinstance(exc, yaml.reader.ReaderError):   # a control character: no mark, a position
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        return ConfigProblem("", f"YAML syntax error: character #x{char:04x} is not allowed",
                             text.count("\n", 0, exc.position) + 1)
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark is not None else None
    problem = getattr(exc, "problem", None) or str(exc)
    return ConfigProblem("", f"YAML syntax error: {problem}", line)


class _Loader(yaml.SafeLoader):
    """PyYAML's composer recurses per nesting level: refuse a deep document before Python's
    recursion limit does (a RecursionError, or worse, a half-built tree)."""

    depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                # types-PyYAML leaves peek_event untyped
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise _TooDeep(mark.line + 1 if mark else None)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class _TooDeep(Exception):
    def __init__(self, line: int | None) -> None:
        super().__init__(line)
        self.line = line


class _Builder:
    def __init__(self, lines: dict[Path, int], problems: list[ConfigProblem]) -> None:
        self.lines = lines
        self.problems = problems
        self.scalars = yaml.SafeLoader("")  # resolves a scalar's tag to int / bool / float ...
        self.values = 0
        self.open: set[int] = set()         # the collections being built: their ids

    def build(self, node: yaml.Node, path: Path) -> Any:
        self.values += 1
        line = node.start_mark.line + 1
        # an alias is the same node again: aliases of aliases multiply (the "billion laughs")
        # and an anchor used inside itself loops; either way the walk stops here
        if self.values > MAX_VALUES:
            raise ConfigError([ConfigProblem(
                dotted(path), f"aliases expand to more than {MAX_VALUES} values", line)])
        if id(node) in self.open:
            raise ConfigError([ConfigProblem(dotted(path), "an anchor is used inside itself",
                                             line)])
        self.lines[path] = line
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path)
        if node.tag not in _COLLECTIONS:   # !!int {a: 1}, !!set, !!omap ...: say so, not guess
            kind = "mapping" if isinstance(node, yaml.MappingNode) else "sequence"
            self.problems.append(ConfigProblem(dotted(path), f"a {kind} cannot be tagged "
                                                             f"{node.tag.rpartition(':')[2]}", line))
            return None
        self.open.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            return [self.build(child, path + (i,)) for i, child in enumerate(node.value)]
        finally:
            self.open.discard(id(node))

    def _scalar(self, node: yaml.Node, path: Path) -> Any:
        line = node.start_mark.line + 1
        try:
            value = self.scalars.construct_object(node, deep=True)
        except yaml.YAMLError as exc:      # an unknown tag (!foo), a scalar tagged !!map ...
            problem = getattr(exc, "problem", None) or str(exc)
            self.problems.append(ConfigProblem(dotted(path), f"cannot read this value: {problem}",
                                               line))
            return None
        except (ArithmeticError, AttributeError, KeyError, TypeError, ValueError):
            # an explicit tag PyYAML's constructor cannot apply: !!int abc, !!bool maybe ...
            self.problems.append(ConfigProblem(
                dotted(path), f"cannot read {node.value!r} as {node.tag.rpartition(':')[2]}", line))
            return None
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
            self.problems.append(ConfigProblem(dotted(path), "integer too large", line))
            return None
        if isinstance(value, float) and not math.isfinite(value):
            self.problems.append(ConfigProblem(dotted(path), "must be a finite number", line))
            return None
        return value

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, key_line, value_node in self._entries(node, path, (id(node),)):
            if not path and key.startswith(EXTENSION_PREFIX):
                continue                    # x-defaults: &d {...}: only there to be merged
            out[key] = self.build(value_node, path + (key,))
            self.lines[path + (key,)] = key_line
        return out

    def _entries(self, node: yaml.MappingNode, path: Path,
                 chain: tuple[int, ...]) -> list[tuple[str, int, yaml.Node]]:
        """The mapping's (key, line, value node), merge keys resolved: written keys win over
        merged ones, and an earlier merged mapping over a later one."""
        items: list[tuple[str, int, yaml.Node, bool]] = []
        written: set[str] = set()
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                self.problems.append(ConfigProblem(dotted(path), "keys must be scalars", key_line))
                continue
            if key_node.tag == _MERGE:
                for merged in self._merged(value_node, path, key_line, chain):
                    items.append((*merged, False))
                continue
            key = str(self._scalar(key_node, path))
            if key in written:
                self.problems.append(ConfigProblem(dotted(path + (key,)), "duplicate key", key_line))
                continue
            written.add(key)
            items.append((key, key_line, value_node, True))
        seen: set[str] = set()
        out = []
        for key, key_line, value_node, was_written in items:
            if key in seen or (not was_written and key in written):
                continue
            seen.add(key)
            out.append((key, key_line, value_node))
        return out

    def _merged(self, value: yaml.Node, path: Path, line: int,
                chain: tuple[int, ...]) -> list[tuple[str, int, yaml.Node]]:
        sources = value.value if isinstance(value, yaml.SequenceNode) else [value]
        out = []
        for src in sources:
            if not isinstance(src, yaml.MappingNode):
                self.problems.append(ConfigProblem(
                    dotted(path + ("<<",)), "a merge key takes a mapping or a list of mappings, "
                                            "e.g. <<: *defaults", line))
            elif id(src) in chain or len(chain) > MAX_DEPTH:
                self.problems.append(ConfigProblem(dotted(path + ("<<",)),
                                                   "a mapping cannot merge itself", line))
            else:
                out += self._entries(src, path, chain + (id(src),))
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
