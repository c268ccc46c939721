"""The p13n configuration file's shape (msgspec Structs); realtime/validation.py reads
and checks a file into it."""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec
from msgspec import Meta

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


class LookupSpec(Base, kw_only=True):
    """What one kind of lookup token (td-js-sdk's ``fetchUserSegments``) may reveal."""

    name: Annotated[str, Meta(min_length=1, max_length=64)]  # tokens create --lookup NAME
    key_column: Name  # one of the service's key columns; people are looked up by it
    segments: list[str | int] = []  # segment ids it may reveal; none: any profile, no ids
    attributes: list[str] = []  # attributes (or attribute.sub) it may reveal


class ServiceSpec(Base, kw_only=True):
    name: str
    database: str
    event_tables: Annotated[list[str], Meta(min_length=1)]
    key_columns: Annotated[list[str | KeyColumn], Meta(min_length=1)]
    attributes: list[AttributeSpec] = []
    segments: list[SegmentSpec] = []
    personalizations: list[PersonalizationSpec] = []
    allowed_origins: list[str] = []  # for public and lookup tokens; empty: any origin
    lookups: list[LookupSpec] = []  # the CDP door's profile lookups


class Limits(Base, kw_only=True):
    """Engine limits, per server; the door answers 429 past them."""

    events_per_second: Annotated[float, Meta(gt=0)] | None = None  # → 2003
    concurrency: Annotated[int, Meta(ge=1)] = 512  # requests inside the engine → 2013
    store_timeout_ms: Annotated[int, Meta(ge=1)] = 2000  # waiting for the profile store


class ConfigFile(Base, kw_only=True):
    services: list[ServiceSpec]
    limits: Limits = msgspec.field(default_factory=Limits)


def from_json(raw: bytes) -> ConfigFile:
    """A configuration stored by ``apply`` (already checked then)."""
    return msgspec.json.decode(raw, type=ConfigFile)


def to_json(config: ConfigFile) -> bytes:
    return msgspec.json.encode(config)
