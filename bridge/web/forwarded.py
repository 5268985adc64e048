"""The client's address behind trusted reverse proxies (pure: no I/O).

Behind the TLS proxy that README recommends, every request's socket peer is the proxy, so
anything keyed by the peer (failed-login throttling) would treat all clients as one. The proxy
appends the address it saw to X-Forwarded-For; only hops we trust may be skipped, walking from
the right (the nearest hop), or any client could pick its own address by sending the header.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_HOPS = 16  # a longer chain is no real deployment; bound the work a header can ask for


def parse_networks(spec: str) -> tuple[Network, ...]:
    """'10.0.0.0/8, 127.0.0.1' -> networks; ValueError naming the entry that does not parse."""
    networks = []
    for entry in (part.strip() for part in spec.split(",")):
        if entry:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network") from None
    return tuple(networks)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [2001:db8::1]:443
        text = text[1:text.index("]")]
    elif text.count(":") == 1:  # 192.0.2.1:443
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def client_address(peer: str | None, forwarded_for: Iterable[str],
                   trusted: Sequence[Network]) -> str:
    """The first address, from the nearest hop outwards, that is not a trusted proxy. A chain
    that breaks (a hop that is not an address) stops at the last hop we could trust."""
    current = peer or "unknown"
    if not trusted:
        return current
    hops = [hop for header in forwarded_for for hop in header.split(",")][-MAX_HOPS:]
    for hop in reversed(hops):
        address = _address(current)
        if address is None or not any(address in network for network in trusted):
            return current
        if _address(hop) is None:
            return current
        current = hop.strip()
    return current
