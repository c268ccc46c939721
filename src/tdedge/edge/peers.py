"""The client's IP address, for ``td_ip``: the TCP peer unless a trusted proxy speaks for it.

``X-Forwarded-For`` is a list any client can write, so it is believed only as far as
it was appended by proxies tdedge trusts (``--trusted-proxy``, addresses or networks).
Walking it from the right, past trusted hops, gives the first address no trusted proxy
would have added on its own: the client's. With no trusted proxy configured the header
is ignored and the peer address is the answer.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from tdedge.edge.http import Scope

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def peer_host(peer: str) -> str:
    """The address part of RSGI's ``scope.client`` (``"1.2.3.4:5678"``, ``"[::1]:5678"``)."""
    if peer.startswith("["):
        return peer[1:].partition("]")[0]
    if peer.count(":") == 1:
        return peer.partition(":")[0]
    return peer  # a bare IPv6 address, or no port at all


class TrustedProxies:
    def __init__(self, entries: Iterable[str]) -> None:
        self._networks: tuple[Network, ...] = tuple(
            ipaddress.ip_network(e.strip(), strict=False) for e in entries
        )

    def trusts(self, address: str) -> bool:
        parsed = _address(address)
        return parsed is not None and any(parsed in n for n in self._networks)

    def request_ip(self, scope: Scope) -> str:
        """The client address of one request (its ``X-Forwarded-For`` read only if needed)."""
        forwarded: list[str] = []
        if self._networks:
            forwarded = [v for k, v in scope.headers.items() if k == "x-forwarded-for"]
        return self.client_ip(scope.client, forwarded)

    def client_ip(self, peer: str, forwarded_for: Iterable[str]) -> str:
        """The client address for a request from ``peer`` with these XFF header values."""
        host = peer_host(peer)
        if not self._networks or not self.trusts(host):
            return host
        hops = [h.strip() for value in forwarded_for for h in value.split(",")]
        for hop in reversed(hops):
            if not hop:
                continue
            parsed = _address(hop)
            if parsed is None:
                # Garbage in the chain: nothing to the left of it can be believed.
                return host
            host = str(parsed)
            if not any(parsed in n for n in self._networks):
                return host
        return host


def _address(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
