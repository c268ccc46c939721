"""tdedge's /metrics (the Prometheus text format) as a dict of numbers."""

from __future__ import annotations

import re

from harness import BenchError
from harness.ports import http_get


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus exposition → {name: sum over every label set} (+ {name{labels}: value})."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)", line)
        if not m:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        name = m.group(1)
        out[name] = out.get(name, 0.0) + value
        if m.group(2):
            out[name + m.group(2)] = value
    return out


def scrape(url: str, timeout: float = 5.0) -> dict[str, float]:
    """GET ``url`` (a /metrics) and parse it; BenchError unless it answers 200."""
    status, body = http_get(url, timeout=timeout)
    if status != 200:
        raise BenchError(f"{url} answered {status}")
    return parse_metrics(body.decode(errors="replace"))
