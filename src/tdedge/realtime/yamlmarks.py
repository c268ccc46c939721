"""YAML text → Python values plus the line of every node, so errors can point at lines.

PyYAML's composer keeps a start mark on every node; validation errors name a path
(``services[0].attributes[2].window``) and ``Marks.line`` turns it back into a line.
Duplicate mapping keys, which PyYAML accepts silently (the last wins), are reported.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from tdedge.realtime.errors import ConfigInvalid, Problem

PathPart = str | int
_PART = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+)\]|\.?`([^`]*)`")


class Marks:
    """Lines of the nodes of one YAML document, looked up by path."""

    def __init__(self, root: yaml.Node | None, source: str) -> None:
        self._root = root
        self.source = source

    def line(self, path: tuple[PathPart, ...]) -> int | None:
        """The 1-based line of the deepest node on ``path`` that exists."""
        node = self._root
        if node is None:
            return None
        best = node.start_mark.line + 1
        for part in path:
            child = _child(node, part)
            if child is None:
                break
            node = child
            best = node.start_mark.line + 1
        return best

    def problem(self, path: tuple[PathPart, ...], message: str) -> Problem:
        return Problem(format_path(path), message, self.line(path), self.source)


def load(text: str, source: str = "") -> tuple[Any, Marks]:
    """The document's value and its marks; ConfigInvalid on YAML syntax errors."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        value = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else None
        raise ConfigInvalid(
            [Problem("", f"not valid YAML: {e.problem or e}", line, source)]
        ) from None
    except yaml.YAMLError as e:
        raise ConfigInvalid([Problem("", f"not valid YAML: {e}", None, source)]) from None
    marks = Marks(root, source)
    duplicates: list[Problem] = []
    if root is not None:
        _find_duplicates(root, (), marks, duplicates)
    if duplicates:
        raise ConfigInvalid(duplicates)
    return value, marks


def format_path(path: tuple[PathPart, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def parse_path(text: str) -> tuple[PathPart, ...]:
    """``$.services[0].attributes[2]`` (msgspec's notation) → ``("services", 0, …)``."""
    text = text.removeprefix("$")
    parts: list[PathPart] = []
    for m in _PART.finditer(text):
        name, index, quoted = m.groups()
        parts.append(int(index) if index is not None else (name or quoted or ""))
    return tuple(parts)


def _child(node: yaml.Node, part: PathPart) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode) and isinstance(part, str):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == part:
                return value  # type: ignore[no-any-return]
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        return node.value[part]  # type: ignore[no-any-return]
    return None


def _find_duplicates(
    node: yaml.Node, path: tuple[PathPart, ...], marks: Marks, out: list[Problem]
) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else str(key)
            if name in seen:
                out.append(
                    Problem(
                        format_path((*path, name)),
                        f"duplicate key {name!r}",
                        key.start_mark.line + 1,
                        marks.source,
                    )
                )
            seen.add(name)
            _find_duplicates(value, (*path, name), marks, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _find_duplicates(item, (*path, i), marks, out)
