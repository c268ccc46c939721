"""What an edge worker knows of the p13n control plane: a cached, compiled view.

The worker polls the registry's generation at most every ``ttl_s`` and recompiles the
active configuration and reloads tokens (personalization and lookup tokens) when it
moved. A token missing from the cache
is looked up once (a token created a moment ago works at once); misses are remembered
briefly so a flood of bad tokens costs one look-up, not one per request. A revocation
is seen within ``ttl_s``. Time is passed in.

When the registry cannot be read, the worker keeps answering from what it knows for up
to ``max_stale_s`` (a control-plane hiccup should not fail requests the cache can
answer); past that, or for a token it has never seen, ConfigStoreDown (error 1004).
"""

from __future__ import annotations

import logging

from tdedge.realtime.config import Limits
from tdedge.realtime.errors import ConfigStoreDown
from tdedge.realtime.registry import Registry
from tdedge.realtime.service import Service, compile_service
from tdedge.realtime.tokens import LookupTokenInfo, TokenInfo, same

log = logging.getLogger("tdedge.p13n")

NEGATIVE_TTL_S = 1.0
MAX_MISSES = 100_000


class View:
    def __init__(self, registry: Registry, ttl_s: float = 1.0, max_stale_s: float = 30.0) -> None:
        self._registry = registry
        self._ttl = ttl_s
        self._max_stale = max_stale_s
        self._loaded_at = float("-inf")
        self._generation = -1
        self.generation = -1  # of the registry, as last loaded
        self._checked_at = float("-inf")
        self.version = 0
        self.services: dict[str, Service] = {}
        self.limits = Limits()
        self._tokens: dict[bytes, TokenInfo] = {}
        self._misses: dict[bytes, float] = {}
        self._lookup_tokens: dict[bytes, LookupTokenInfo] = {}
        self._lookup_misses: dict[bytes, float] = {}

    def refresh(self, now: float, at_least: int = -1) -> None:
        """Reload if the registry changed; raises ConfigStoreDown when it cannot be read.

        Polls at most every ``ttl_s``, unless this view is older than generation
        ``at_least`` (another process has seen a newer configuration)."""
        if now - self._checked_at < self._ttl and at_least <= self.generation:
            return
        self._checked_at = now
        try:
            self._reload()
        except ConfigStoreDown:
            if now - self._loaded_at > self._max_stale:
                raise
            log.warning("p13n configuration store unreadable; answering from the cache")
            return
        self._loaded_at = now

    def _reload(self) -> None:
        generation = self._registry.generation()
        if generation == self._generation:
            return
        applied = self._registry.active()
        tokens = self._registry.tokens_by_hash()
        lookup_tokens = self._registry.lookup_tokens_by_hash()
        # Nothing changes until everything is read: a failure leaves the old view whole.
        compiled: dict[str, Service] = {}
        problems: list[str] = []
        if applied is not None:
            for i, spec in enumerate(applied.config.services):
                service = compile_service(
                    spec, ("services", i), lambda p, m: problems.append(f"{p}: {m}")
                )
                if service is None:  # checked at apply time; a newer tdedge may differ
                    log.error("p13n service does not compile", extra={"problems": problems})
                    continue
                compiled[spec.name] = service
            self.limits = applied.config.limits
            self.version = applied.version
        self.services = compiled
        self._tokens = tokens
        self._misses.clear()
        self._lookup_tokens = lookup_tokens
        self._lookup_misses.clear()
        self._generation = self.generation = generation

    def token(self, digest: bytes, now: float) -> TokenInfo | None:
        info = self._tokens.get(digest)
        if info is None:
            if _missed(self._misses, digest, now):
                return None
            info = self._registry.token_by_hash(digest)
            if info is None:
                _remember_miss(self._misses, digest, now)
                return None
            self._tokens[digest] = info
        # The dict found it by hash; compare again in constant time all the same.
        return info if same(info.token_hash, digest) else None

    def lookup_token(self, digest: bytes, now: float) -> LookupTokenInfo | None:
        """A lookup token by its hash, as ``token`` finds personalization tokens."""
        info = self._lookup_tokens.get(digest)
        if info is None:
            if _missed(self._lookup_misses, digest, now):
                return None
            info = self._registry.lookup_token_by_hash(digest)
            if info is None:
                _remember_miss(self._lookup_misses, digest, now)
                return None
            self._lookup_tokens[digest] = info
        return info if same(info.token_hash, digest) else None


def _missed(misses: dict[bytes, float], digest: bytes, now: float) -> bool:
    return now - misses.get(digest, float("-inf")) < NEGATIVE_TTL_S


def _remember_miss(misses: dict[bytes, float], digest: bytes, now: float) -> None:
    if len(misses) >= MAX_MISSES:
        misses.clear()
    misses[digest] = now
