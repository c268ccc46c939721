"""Structured logs: one JSON object per line on stderr, tdedge's and granian's alike.

Fields passed with ``extra=`` become keys. Nothing here knows about secrets: callers
never pass API keys or tokens, only key ids.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import msgspec

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            # granian's Rust side logs as "_granian".
            "logger": record.name.lstrip("_"),
            "msg": record.getMessage(),
        }
        for k, v in vars(record).items():
            if k not in _STANDARD and not k.startswith("_"):
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return msgspec.json.encode(out, enc_hook=str).decode()


def configure(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter())
    root = logging.getLogger("tdedge")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


# Levels as ``--log-level`` takes them.
LEVELS = ("critical", "error", "warning", "info", "debug")


def granian_config() -> dict[str, Any]:
    """The logging dictConfig granian applies in its main process and each worker: its
    lines in the same JSON as tdedge's, on stderr (its default is plain text on stdout).

    granian merges this over its own configuration key by key, so the formatters,
    handlers and loggers given here replace its own whole.
    """
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JSONFormatter"}},
        "handlers": {"json": handler},
        "loggers": {
            "_granian": {"handlers": ["json"], "level": "INFO", "propagate": False},
            "granian.access": {"handlers": ["json"], "level": "INFO", "propagate": False},
        },
    }
