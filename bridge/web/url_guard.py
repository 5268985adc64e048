"""Checks a TTS endpoint URL a user enters before the bridge ever connects to it (SSRF guard).

The bridge connects from inside its network, so a user-supplied URL could reach what users
cannot: cloud metadata services, link-local addresses, internal hosts. Every address the host
resolves to is checked, not just the first: a name with one public and one internal address is
refused. Link-local, metadata, multicast, unspecified and reserved addresses are always refused;
loopback, private, unique-local and CGNAT addresses only unless `allow_private`.

Limit: the check runs when the URL is saved; a name that later re-resolves elsewhere (DNS
rebinding) is not caught here. Operators who fear that should enter IP literals or pin DNS.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit, urlunsplit

from bridge.errors import ConfigError
from bridge.silma.endpoint import parse_endpoint

SCHEMES = ("http", "https", "ws", "wss")
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
RESOLVE_TIMEOUT_S = 5.0
MAX_URL_CHARS = 2048

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Instance metadata services: AWS/GCP/Azure/Oracle (IPv4 and AWS's IPv6), Alibaba, Oracle
# Cloud Classic. Listed on their own because some sit outside link-local (100.100.100.200 is in
# CGNAT space, which `allow_private` would otherwise let through).
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "192.0.0.192",
              "169.254.170.2")
)
_PRIVATE = "a loopback or private address (not allowed on this bridge)"


def refusal(address: IPAddress, *, allow_private: bool) -> str | None:
    """Why connecting to `address` is refused, or None when it is allowed."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:169.254.169.254 is 169.254.169.254
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_loopback:  # before is_reserved, which includes ::1
        return None if allow_private else _PRIVATE
    if address.is_multicast or address.is_unspecified or address.is_reserved:
        return "not a unicast host address"
    if not allow_private and not address.is_global:
        # is_global is False for RFC 1918, unique-local (fc00::/7), CGNAT (100.64/10) and the
        # documentation/benchmark ranges.
        return _PRIVATE
    return None


async def check_endpoint(url: str, *, allow_private: bool) -> str:
    """The URL normalized (lower-case scheme and host, no trailing slash), or ValueError with a
    message fit to show next to the field."""
    url = url.strip()
    if len(url) > MAX_URL_CHARS:
        raise ValueError(f"URL is longer than {MAX_URL_CHARS} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError("not a valid URL (check the host and port)") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError("URL must start with http://, https://, ws:// or wss://")
    try:
        parse_endpoint(url)  # refuses a missing host, credentials and a query string
    except ConfigError as exc:
        message = str(exc).removeprefix("SILMA endpoint ")
        raise ValueError(message[:1].upper() + message[1:]) from None
    if parts.fragment:
        raise ValueError("URL must not carry a #fragment")
    host = parts.hostname or ""
    for address in await _resolve(host, port or DEFAULT_PORTS[scheme]):
        reason = refusal(address, allow_private=allow_private)
        if reason is not None:
            where = host if str(address) == host else f"{host} resolves to {address}, which"
            raise ValueError(f"{where} is {reason}")
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    return urlunsplit((scheme, netloc, parts.path.rstrip("/"), "", ""))


async def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]  # a literal: nothing to look up
    except ValueError:
        pass
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_S):
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError):
        raise ValueError(f"host {host} does not resolve") from None
    # The scope of an IPv6 link-local address ("fe80::1%eth0") is not part of the address.
    addresses = {ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos}
    if not addresses:
        raise ValueError(f"host {host} does not resolve")
    return sorted(addresses, key=str)
