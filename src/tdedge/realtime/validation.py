"""Reading a p13n configuration file into a checked ConfigFile.

``parse(text, source)`` returns a checked ConfigFile or raises ConfigInvalid with every
problem found, each pointing at a line and a field path. Shape errors come from msgspec
(unknown fields are refused, so a typo never passes silently); meaning errors (unknown
attribute in a criteria, duplicate names, bad durations, regexps) from ``check``, which
compiles the configuration exactly as the engine will (``service.compile_service``).
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from tdedge.realtime import yamlmarks
from tdedge.realtime.config import (
    AttributeSpec,
    ConfigFile,
    LookupSpec,
    PersonalizationSpec,
    SegmentSpec,
)
from tdedge.realtime.errors import ConfigInvalid, Problem
from tdedge.realtime.service import compile_service

_MSGSPEC_PATH = re.compile(r" - at `(\$[^`]*)`$")
_UNKNOWN_FIELD = re.compile(r"unknown field `([^`]*)`")


def parse(text: str, source: str = "") -> ConfigFile:
    """A checked configuration, or ConfigInvalid listing every problem with its line."""
    raw, marks = yamlmarks.load(text, source)
    if not isinstance(raw, dict):
        raise ConfigInvalid([marks.problem((), "the file must be a mapping with `services:`")])
    # Items of the long lists are converted one by one first, so one run reports a
    # shape problem in every attribute, segment and section, not only the first.
    problems = _item_problems(raw, marks)
    if problems:
        raise ConfigInvalid(problems)
    try:
        config = msgspec.convert(raw, ConfigFile, strict=True)
    except msgspec.ValidationError as e:
        raise ConfigInvalid([_shape_problem(str(e), marks)]) from None
    problems = check(config, marks)
    if problems:
        raise ConfigInvalid(problems)
    return config


_ITEM_TYPES: dict[str, Any] = {
    "attributes": AttributeSpec,
    "segments": SegmentSpec,
    "personalizations": PersonalizationSpec,
    "lookups": LookupSpec,
}


def _item_problems(raw: dict[str, Any], marks: yamlmarks.Marks) -> list[Problem]:
    problems: list[Problem] = []
    services = raw.get("services")
    if not isinstance(services, list):
        return problems
    for i, service in enumerate(services):
        if not isinstance(service, dict):
            continue
        for field, kind in _ITEM_TYPES.items():
            items = service.get(field)
            if not isinstance(items, list):
                continue
            for j, item in enumerate(items):
                try:
                    msgspec.convert(item, kind, strict=True)
                except msgspec.ValidationError as e:
                    problems.append(_shape_problem(str(e), marks, ("services", i, field, j)))
    return problems


def check(config: ConfigFile, marks: yamlmarks.Marks) -> list[Problem]:
    problems: list[Problem] = []
    names: set[str] = set()
    for i, spec in enumerate(config.services):
        if spec.name in names:
            problems.append(marks.problem(("services", i, "name"), "duplicate service name"))
        names.add(spec.name)
        compile_service(spec, ("services", i), lambda p, m: problems.append(marks.problem(p, m)))
    return problems


def _shape_problem(
    message: str, marks: yamlmarks.Marks, prefix: tuple[yamlmarks.PathPart, ...] = ()
) -> Problem:
    m = _MSGSPEC_PATH.search(message)
    path: tuple[yamlmarks.PathPart, ...] = ()
    if m is not None:
        path = yamlmarks.parse_path(m.group(1))
        message = message[: m.start()]
    unknown = _UNKNOWN_FIELD.search(message)
    if unknown is not None:
        path = (*path, unknown.group(1))
    message = message.replace("`", "'")
    return marks.problem((*prefix, *path), message[:1].lower() + message[1:])
