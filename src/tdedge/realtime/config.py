"""The p13n configuration file: its shape (msgspec Structs) and its validation.

``parse(text, source)`` returns a checked ConfigFile or raises ConfigInvalid with every
problem found, each pointing at a line and a field path. Shape errors come from msgspec
(unknown fields are refused, so a typo never passes silently); meaning errors (unknown
attribute in a criteria, duplicate names, bad durations, regexps) from ``_check``, which
compiles the configuration exactly as the engine will (``service.compile``).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from tdedge.realtime import yamlmarks
from tdedge.realtime.errors import ConfigInvalid, Problem

# Path parts of the p13n door (Treasure Data's rule).
P13N_NAME = re.compile(r"[0-9a-z_]{3,128}")
COLUMN = re.compile(r"[A-Za-z0-9_]{1,128}")
SERVICE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Treasure Data's limits per profile.
MAX_ATTRIBUTES = 200

Duration = str | int | float
Name = Annotated[str, Meta(min_length=1, max_length=128)]


class Base(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    pass


class KeyColumn(Base, kw_only=True):
    name: Name
    valid_regexp: str | None = None
    invalid_texts: list[str] = []


class AttributeBase(Base, tag_field="type", kw_only=True):
    name: Name
    sensitive: bool = False  # never returned on /public requests


class EventAttribute(AttributeBase, kw_only=True):
    tables: list[str] | None = None  # default: every event table of the service
    filter: dict[str, Any] | None = None  # criteria over event columns


class SingleSpec(EventAttribute, tag="single", kw_only=True):
    column: Name
    expire: Duration | None = None


class ListSpec(EventAttribute, tag="list", kw_only=True):
    column: Name
    max_items: Annotated[int, Meta(ge=1, le=100)] = 10
    window: Duration | None = None
    distinct: bool = True


class CounterSpec(EventAttribute, tag="counter", kw_only=True):
    window: Duration | None = None  # none: an all-time total
    bucket: Duration | None = None  # sub-duration of a sliding window
    increment: float = 1.0
    increment_column: Name | None = None


class ImportedSpec(AttributeBase, tag="imported", kw_only=True):
    # Loaded from batch data: rows of (a key column, a column named like the attribute).
    sql: str | None = None
    refresh: Duration = "1h"


AttributeSpec = SingleSpec | ListSpec | CounterSpec | ImportedSpec


class SegmentSpec(Base, kw_only=True):
    id: str | int
    name: str | None = None
    sql: str  # its rows name members by a key column
    refresh: Duration = "1h"


class KeyEvent(Base, kw_only=True):
    tables: list[str] | None = None
    filter: dict[str, Any] | None = None


class Payload(Base, kw_only=True):
    attributes: dict[str, str] = {}  # output name → attribute (or attribute.sub)
    batch_segments: list[str | int] = []
    strings: dict[str, str] = {}  # fixed texts, returned among the attributes


class PersonalizationSpec(Base, kw_only=True):
    section: Name
    criteria: dict[str, Any] | None = None  # none: every profile qualifies
    key_event: KeyEvent | None = None
    accept_unknown: bool = True  # whether a profile first seen by this event qualifies
    payload: Payload = msgspec.field(default_factory=Payload)


class ServiceSpec(Base, kw_only=True):
    name: str
    database: str
    event_tables: Annotated[list[str], Meta(min_length=1)]
    key_columns: Annotated[list[str | KeyColumn], Meta(min_length=1)]
    attributes: list[AttributeSpec] = []
    segments: list[SegmentSpec] = []
    personalizations: list[PersonalizationSpec] = []
    allowed_origins: list[str] = []  # for public tokens; empty: any http(s) origin


class Limits(Base, kw_only=True):
    """Engine limits, per server; the door answers 429 past them."""

    events_per_second: Annotated[float, Meta(gt=0)] | None = None  # → 2003
    concurrency: Annotated[int, Meta(ge=1)] = 512  # requests inside the engine → 2013
    store_timeout_ms: Annotated[int, Meta(ge=1)] = 2000  # waiting for the profile store


class ConfigFile(Base, kw_only=True):
    services: list[ServiceSpec]
    limits: Limits = msgspec.field(default_factory=Limits)


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


def from_json(raw: bytes) -> ConfigFile:
    """A configuration stored by ``apply`` (already checked then)."""
    return msgspec.json.decode(raw, type=ConfigFile)


def to_json(config: ConfigFile) -> bytes:
    return msgspec.json.encode(config)


_ITEM_TYPES: dict[str, Any] = {
    "attributes": AttributeSpec,
    "segments": SegmentSpec,
    "personalizations": PersonalizationSpec,
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
    from tdedge.realtime.service import compile_service

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
