"""One root exception and a shallow tree; third-party errors are wrapped at the boundary."""

from __future__ import annotations


class TdedgeError(Exception):
    """Root of every error tdedge raises on purpose."""


class JournalUnavailable(TdedgeError):
    """The journal cannot take a record now (disk full, backlog over bound, closed).

    The edge answers 503 with Retry-After: the record was not accepted.
    """


class ControlError(TdedgeError):
    """A control-plane request was refused (unknown key, duplicate database, …)."""


class NotFound(ControlError):
    pass


class AlreadyExists(ControlError):
    pass


class InvalidName(ControlError):
    pass


class LimitReached(ControlError):
    """An account has as many of something (databases, tables) as it may have;
    ``code`` is the reason code (``database_limit``, ``table_limit``)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class LakeError(TdedgeError):
    """The lake refused an operation (bad SQL, catalog unavailable)."""


class PartitionTakenOver(LakeError):
    """A commit refused because the stored position of a journal shard it was read
    from is not that position any more: another loader took the shard over and loaded
    past it (lake/fence.py). Not a failure to retry: the batch's records of that shard
    are the other loader's now."""

    def __init__(self, shards: list[str]) -> None:
        self.shards = shards
        super().__init__(
            "partition taken over by another loader: the lake's position of "
            f"{', '.join(shards)} is not the one the batch was read from"
        )
