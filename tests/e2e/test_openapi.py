"""The published OpenAPI documents (docs/openapi/) against a live server, by schemathesis:
for generated requests, valid and not, no door answers 5xx, a status the document does
not list, a content type it does not list, or a body that breaks its schema."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from tests.e2e.conftest import Server, free_port, wait_healthy

DOCS = Path(__file__).resolve().parents[2] / "docs" / "openapi"
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]
# Bounded: a few dozen requests per operation keep the whole module near a minute.
BOUNDED = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)


@dataclass(frozen=True)
class Live:
    server: Server
    api: str
    records: str
    p13n: str
    cdp: str


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    api, records, p13n, cdp = free_port(), free_port(), free_port(), free_port()
    srv = Server(
        Path(tmp_path_factory.mktemp("openapi")) / "data",
        [
            "--api-port", str(api),
            "--records-port", str(records),
            "--p13n-port", str(p13n),
            "--cdp-port", str(cdp),
        ],
    )  # fmt: skip
    srv.start(timeout=60)
    try:
        urls = [f"http://127.0.0.1:{port}" for port in (api, records, p13n, cdp)]
        for url in urls:
            wait_healthy(url)
        yield Live(srv, *urls)
    finally:
        srv.kill()


def _schema(name: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_path(DOCS / f"{name}.yaml")


rest = _schema("api")
legacy = _schema("legacy")
records = _schema("records")
p13n = _schema("p13n")
cdp = _schema("cdp")


@rest.parametrize()
@BOUNDED
def test_rest_api(case: schemathesis.Case[Any], live: Live) -> None:
    headers = {"Authorization": f"TD1 {live.server.master_key}"}
    response = case.call(base_url=live.api, headers=headers, timeout=30)
    case.validate_response(response, checks=CHECKS)


@legacy.parametrize()
@BOUNDED
def test_legacy_door(case: schemathesis.Case[Any], live: Live) -> None:
    response = case.call(base_url=live.server.url, timeout=30)
    case.validate_response(response, checks=CHECKS)


@records.parametrize()
@BOUNDED
def test_records_door(case: schemathesis.Case[Any], live: Live) -> None:
    response = case.call(base_url=live.records, timeout=30)
    case.validate_response(response, checks=CHECKS)


@p13n.parametrize()
@BOUNDED
def test_p13n_door(case: schemathesis.Case[Any], live: Live) -> None:
    response = case.call(base_url=live.p13n, timeout=30)
    case.validate_response(response, checks=CHECKS)


@cdp.parametrize()
@BOUNDED
def test_cdp_door(case: schemathesis.Case[Any], live: Live) -> None:
    response = case.call(base_url=live.cdp, timeout=30)
    case.validate_response(response, checks=CHECKS)
