"""The personalization engine's errors: one root under TdedgeError, a shallow tree.

Each store error carries the code the p13n door answers with (500 + 1001-1005), so the
mapping from "which store is down" to the wire lives next to the error, not in the door.
"""

from __future__ import annotations

from tdedge.errors import TdedgeError


class P13nError(TdedgeError):
    """Root of the real-time personalization errors."""


class ConfigInvalid(P13nError):
    """A configuration file was refused; ``problems`` point at lines and fields."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


class Problem:
    """One thing wrong with a configuration file, where it is and what it is."""

    __slots__ = ("line", "message", "path", "source")

    def __init__(self, path: str, message: str, line: int | None = None, source: str = "") -> None:
        self.path = path  # e.g. services[0].attributes[2].window
        self.message = message
        self.line = line  # 1-based; None when the file has no node there
        self.source = source

    def __str__(self) -> str:
        where = f"{self.source or '<config>'}:{self.line}" if self.line else self.source
        field = f" {self.path}:" if self.path else ""
        return f"{where}:{field} {self.message}" if where else f"{field.strip()} {self.message}"


class StoreUnavailable(P13nError):
    """A backing store cannot be read or written right now (the door answers 500)."""

    code = 9999
    store = "unknown"


class JournalDown(StoreUnavailable):
    code = 1001
    store = "event journal"


class ProfileStoreDown(StoreUnavailable):
    code = 1002
    store = "profile store"


class BatchStoreDown(StoreUnavailable):
    code = 1003
    store = "batch segment store"


class ConfigStoreDown(StoreUnavailable):
    code = 1004
    store = "configuration store"


class KeyStoreDown(StoreUnavailable):
    code = 1005
    store = "API key directory"


class Refused(P13nError):
    """The engine process refused a request its worker had admitted: the configuration
    changed in between (``code``: the door's 3001 or 3004)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class TokenLimit(P13nError):
    """A service already has the most tokens it may have."""


class UnknownService(P13nError):
    """No service of that name in the active configuration."""


class RefreshFailed(P13nError):
    """A batch segment or imported attribute could not be loaded from the lake."""
