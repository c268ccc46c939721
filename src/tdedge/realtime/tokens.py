"""Personalization tokens: ``{account_id}/{instance_id}/{32 hex}``, kept only hashed.

Like API keys, a token is 128 random bits, so SHA-256 is the right hash (a slow
password hash would add latency to every request without adding safety); the stored
hash is compared in constant time. The id shown by ``tokens list`` is derived from the
hash, never from the secret. A token may carry an allow-list of client networks.

Lookup tokens (the CDP door's, td-js-sdk's ``fetchUserSegments``) look like Treasure
Data's Profiles API tokens, a UUID: 122 random bits, kept and compared the same way.
They name a service's ``lookups:`` entry, which says what they may reveal.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
import uuid
from collections.abc import Sequence

import msgspec

MAX_PER_SERVICE = 50
_TOKEN = re.compile(r"(\d{1,18})/(\d{1,18})/([0-9a-fA-F]{32})")
_LOOKUP_TOKEN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TokenInfo(msgspec.Struct, frozen=True):
    token_id: str
    token_hash: bytes
    service: str
    account_id: int
    instance_id: int
    public: bool
    allow_ips: list[str]  # CIDRs; empty: any client
    name: str
    created_at: int
    revoked: bool


class LookupTokenInfo(msgspec.Struct, frozen=True):
    token_id: str
    token_hash: bytes
    service: str
    lookup: str  # the service's lookups: entry it answers for
    instance_id: int  # the service's, answered as audienceId
    name: str
    created_at: int
    revoked: bool


class ParsedToken(msgspec.Struct, frozen=True):
    account_id: int
    instance_id: int
    digest: bytes


def new_token(account_id: int, instance_id: int) -> str:
    return f"{account_id}/{instance_id}/{secrets.token_hex(16)}"


def parse(token: str) -> ParsedToken | None:
    """None when ``token`` is not in the documented format (error 3003)."""
    m = _TOKEN.fullmatch(token.strip())
    if m is None:
        return None
    account, instance, secret = m.groups()
    canonical = f"{int(account)}/{int(instance)}/{secret.lower()}"
    return ParsedToken(int(account), int(instance), hash_token(canonical))


def new_lookup_token() -> str:
    return str(uuid.uuid4())


def parse_lookup(token: str) -> bytes | None:
    """The hash of a lookup token, or None when ``token`` is not one (any letter case)."""
    canonical = token.strip().lower()
    if _LOOKUP_TOKEN.fullmatch(canonical) is None:
        return None
    return hash_token(canonical)


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def token_id(digest: bytes) -> str:
    return digest.hex()[:12]


def same(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def networks(cidrs: Sequence[str]) -> list[Network]:
    """Parse an allow-list; ValueError names the bad entry."""
    out: list[Network] = []
    for cidr in cidrs:
        try:
            out.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError as e:
            raise ValueError(f"not an IP network: {cidr!r} ({e})") from None
    return out


def client_ip(peer: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address in a server's peer text: ``1.2.3.4:5678``, ``[::1]:5678``, ``::1:5678``
    or a bare address."""
    text = peer.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else text[1:]
        candidates = [text]
    else:
        candidates = [text, text.rsplit(":", 1)[0]]
    for candidate in candidates:
        try:
            address = ipaddress.ip_address(candidate)
        except ValueError:
            continue
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            return address.ipv4_mapped
        return address
    return None


def allowed(peer: str, nets: Sequence[Network]) -> bool:
    if not nets:
        return True
    address = client_ip(peer)
    return address is not None and any(address in n for n in nets)
