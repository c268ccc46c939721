"""Personalization tokens: format, hashing, allow-lists, the 50-per-service limit."""

from __future__ import annotations

import multiprocessing
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from tdedge.errors import NotFound
from tdedge.realtime import tokens, validation
from tdedge.realtime.errors import ConfigStoreDown, TokenLimit, UnknownService
from tdedge.realtime.registry import Registry
from tdedge.realtime.view import View

EXAMPLE = (Path(__file__).parents[1] / "data" / "p13n-example.yaml").read_text()


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    r = Registry.open(tmp_path / "control.sqlite")
    r.apply(validation.parse(EXAMPLE), EXAMPLE)
    return r


def test_format_and_parse() -> None:
    token = tokens.new_token(12345, 67890)
    account, instance, secret = token.split("/")
    assert (account, instance, len(secret)) == ("12345", "67890", 32)
    parsed = tokens.parse(token)
    assert parsed is not None and (parsed.account_id, parsed.instance_id) == (12345, 67890)
    assert tokens.parse(token.upper()) == parsed  # hex case does not matter
    for bad in ("", "1/2", "1/2/abc", f"x/2/{'a' * 32}", f"1/2/{'g' * 32}", f"1/2/{'a' * 33}"):
        assert tokens.parse(bad) is None


def test_only_the_hash_is_stored(registry: Registry, tmp_path: Path) -> None:
    token = registry.create_token("web", 1, False, [])
    secret = token.rsplit("/", 1)[1]
    raw = (tmp_path / "control.sqlite").read_bytes()
    wal = tmp_path / "control.sqlite-wal"
    raw += wal.read_bytes() if wal.exists() else b""
    assert secret.encode() not in raw
    (info,) = registry.list_tokens()
    parsed = tokens.parse(token)
    assert parsed is not None and info.token_hash == parsed.digest
    assert info.token_id == parsed.digest.hex()[:12] and secret not in info.token_id


def test_instance_ids_are_stable_across_applies(registry: Registry) -> None:
    first = registry.instance_ids()["web"]
    registry.apply(validation.parse(EXAMPLE), EXAMPLE)
    assert registry.instance_ids()["web"] == first
    token = registry.create_token("web", 7, True, [])
    assert token.startswith(f"7/{first}/")


def test_at_most_fifty_per_service(registry: Registry) -> None:
    made = [registry.create_token("web", 1, False, []) for _ in range(tokens.MAX_PER_SERVICE)]
    with pytest.raises(TokenLimit):
        registry.create_token("web", 1, False, [])
    registry.revoke_token(registry.list_tokens()[0].token_id)
    registry.create_token("web", 1, False, [])
    assert len(made) == 50


def test_unknown_service_bad_cidr_and_unknown_id(registry: Registry) -> None:
    with pytest.raises(UnknownService):
        registry.create_token("nope", 1, False, [])
    with pytest.raises(ValueError, match="not an IP network"):
        registry.create_token("web", 1, False, ["10.0.0.0/33"])
    assert registry.list_tokens() == []
    with pytest.raises(NotFound):
        registry.revoke_token("000000000000")


def test_allow_lists() -> None:
    nets = tokens.networks(["10.0.0.0/8", "2001:db8::/32", "192.168.1.7"])
    assert tokens.allowed("10.1.2.3", nets)
    assert tokens.allowed("192.168.1.7", nets)
    assert not tokens.allowed("192.168.1.8", nets)
    assert tokens.allowed("2001:db8::1", nets)
    assert tokens.allowed("::ffff:10.0.0.1", nets)  # IPv4-mapped
    assert not tokens.allowed("not an address", nets)
    assert tokens.allowed("8.8.8.8", [])  # no list: anyone
    assert str(tokens.client_ip("[::1]:5678")) == "::1"
    assert str(tokens.client_ip("1.2.3.4:5678")) == "1.2.3.4"


def test_the_view_sees_new_tokens_at_once_and_revocations_within_its_ttl(
    registry: Registry,
) -> None:
    view = View(registry, ttl_s=1.0)
    view.refresh(0.0)
    token = registry.create_token("web", 1, False, [])
    parsed = tokens.parse(token)
    assert parsed is not None
    info = view.token(parsed.digest, 0.1)  # a miss looks it up
    assert info is not None and info.service == "web"
    registry.revoke_token(info.token_id)
    view.refresh(0.5)  # within the TTL: still cached
    cached = view.token(parsed.digest, 0.5)
    assert cached is not None and not cached.revoked
    view.refresh(1.2)
    revoked = view.token(parsed.digest, 1.2)
    assert revoked is not None and revoked.revoked
    assert "web" in view.services


def test_generation_moves_with_every_change(registry: Registry, tmp_path: Path) -> None:
    g = registry.generation()
    registry.create_token("web", 1, False, [])
    assert registry.generation() == g + 1
    conn = sqlite3.connect(tmp_path / "control.sqlite")
    (n,) = conn.execute("SELECT count(*) FROM p13n_configs").fetchone()
    conn.close()
    assert n == 1


def test_the_view_answers_from_its_cache_while_the_registry_is_down(
    registry: Registry, tmp_path: Path
) -> None:
    view = View(registry, ttl_s=1.0, max_stale_s=10.0)
    view.refresh(0.0)
    conn = sqlite3.connect(tmp_path / "control.sqlite", isolation_level=None)
    conn.execute("ALTER TABLE p13n_meta RENAME TO away")
    try:
        view.refresh(5.0)  # unreadable, but the cache is only 5 s old
        assert "web" in view.services
        with pytest.raises(ConfigStoreDown):
            view.refresh(10.5)
    finally:
        conn.execute("ALTER TABLE away RENAME TO p13n_meta")
        conn.close()
    view.refresh(12.0)
    assert "web" in view.services


def _open_registry(path: str, go: Any, results: Any) -> None:
    go.wait()
    try:
        Registry.open(Path(path)).close()
        results.put("ok")
    except Exception as e:
        results.put(repr(e))


def test_worker_processes_starting_together_set_up_the_tables_once(tmp_path: Path) -> None:
    """Each worker opens the registry at start; the first to create the tables wins and
    the others must not fail (they did: 'table p13n_configs already exists')."""
    ctx = multiprocessing.get_context("fork")
    for round_ in range(5):
        go, results = ctx.Event(), ctx.Queue()
        path = str(tmp_path / f"control-{round_}.sqlite")
        procs = [ctx.Process(target=_open_registry, args=(path, go, results)) for _ in range(4)]
        for p in procs:
            p.start()
        time.sleep(0.2)
        go.set()
        for p in procs:
            p.join(timeout=60)
        assert [results.get(timeout=10) for _ in procs] == ["ok"] * 4
