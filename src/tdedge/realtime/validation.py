"""Reading a p13n configuration file into a checked ConfigFile.

``parse(text, source)`` returns a checked ConfigFile or raises ConfigInvalid with every
problem found, each pointing at a line and a field path. Shape errors come from msgspec
(unknown fields are refused, so a typo never passes silently); meaning errors (unknown
attribute in a criteria, duplicate names, bad durations, regexps) from ``check``, which
compiles the configuration exactly as the engine will (``service.compile_service``).
"""

from __future__ import annotations

import re
import typing
from typing import Any

import msgspec

from tdedge.realtime import yamlmarks
from tdedge.realtime.config import (
    AttributeSpec,
    ConfigFile,
    LookupSpec,
    PersonalizationSpec,
    SegmentSpec,
    ServiceSpec,
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
    # shape problem in every attribute, segment and section, not only the first; so
    # are the fields of each service and of the file. The services whose shape is
    # right are then checked for meaning too, in the same run.
    problems = _item_problems(raw, marks)
    problems += _field_problems(raw, ConfigFile, marks, (), skip={"services"})
    services = raw.get("services")
    sound: list[tuple[int, ServiceSpec]] = []
    for i, service in enumerate(services if isinstance(services, list) else []):
        path: tuple[yamlmarks.PathPart, ...] = ("services", i)
        if not isinstance(service, dict):
            problems.append(marks.problem(path, "a service must be a mapping"))
            continue
        found = _field_problems(service, ServiceSpec, marks, path, skip=set(_ITEM_TYPES))
        prefix = yamlmarks.format_path(path)
        items_sound = not any(p.path.startswith(prefix) for p in problems)
        problems += found
        if items_sound and not found:
            sound.append((i, msgspec.convert(service, ServiceSpec, strict=True)))
    if problems:
        raise ConfigInvalid(problems + _meaning_problems(sound, marks))
    try:
        config = msgspec.convert(raw, ConfigFile, strict=True)
    except msgspec.ValidationError as e:
        raise ConfigInvalid([_shape_problem(str(e), marks)]) from None
    problems = check(config, marks)
    if problems:
        raise ConfigInvalid(problems)
    return config


def _field_problems(
    raw: dict[str, Any],
    kind: Any,
    marks: yamlmarks.Marks,
    path: tuple[yamlmarks.PathPart, ...],
    skip: set[str],
) -> list[Problem]:
    """A problem for each field of ``raw`` that ``kind`` does not have, lacks or takes
    in another shape (msgspec stops at a struct's first problem; this finds them all)."""
    problems: list[Problem] = []
    info = msgspec.inspect.type_info(kind)
    assert isinstance(info, msgspec.inspect.StructType)
    fields = {f.name: f for f in info.fields}
    hints = typing.get_type_hints(kind, include_extras=True)
    for name in raw:
        if name not in fields:
            problems.append(marks.problem((*path, name), f"unknown field '{name}'"))
    for name, field in fields.items():
        if name in skip:
            continue
        if name not in raw:
            if field.required:
                problems.append(marks.problem(path, f"object missing required field '{name}'"))
            continue
        try:
            msgspec.convert(raw[name], hints[name], strict=True)
        except msgspec.ValidationError as e:
            problems.append(_shape_problem(str(e), marks, (*path, name)))
    return problems


def _meaning_problems(
    services: list[tuple[int, ServiceSpec]], marks: yamlmarks.Marks
) -> list[Problem]:
    problems: list[Problem] = []
    for i, spec in services:
        compile_service(spec, ("services", i), lambda p, m: problems.append(marks.problem(p, m)))
    return problems


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
