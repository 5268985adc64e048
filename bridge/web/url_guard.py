"""Checks a TTS endpoint URL a user enters before the bridge ever connects to it (SSRF guard).

The bridge connects from inside its network, so a user-supplied URL could reach what users
cannot: cloud metadata services, link-local addresses, internal hosts. Every address the host
resolves to is checked, not just the first: a name with one public and one internal address is
refused. Link-local, metadata, multicast, unspecified and reserved addresses are always refused;
loopback, private, unique-local and CGNAT addresses only unless `allow_private`.

Two layers. `check_endpoint` runs when a URL is saved and gives the user a readable reason.
`guarded_session` enforces the same `refusal` rules at connect time on every connection (a name
that re-resolves elsewhere later, DNS rebinding, is caught there): its resolver refuses a name
with any forbidden address, and its socket factory checks the exact address each socket is
about to connect to (which also covers IP literals, which aiohttp never hands to a resolver).
Redirects are not followed on requests to a TTS endpoint (callers pass allow_redirects=False),
so a 302 to an internal service goes nowhere.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
import ssl
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from bridge.errors import ConfigError
from bridge.silma.endpoint import parse_endpoint, split_endpoints

SCHEMES = ("http", "https", "ws", "wss")
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
RESOLVE_TIMEOUT_S = 5.0
MAX_URL_CHARS = 2048

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Instance metadata services: AWS/GCP/Azure/Oracle (IPv4 and AWS's IPv6), Alibaba, Oracle
# Cloud Classic, and Azure's wireserver (168.63.129.16: host agent and platform DNS, a public
# address that only the VM's host answers). Listed on their own because some sit outside
# link-local (100.100.100.200 is in CGNAT space, which `allow_private` would otherwise let
# through; 168.63.129.16 is "global").
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "192.0.0.192",
              "169.254.170.2", "168.63.129.16")
)
_PRIVATE = "a loopback or private address (not allowed on this bridge)"
# "This network" (RFC 1122): 0.x.y.z is not a host anyone can be sent to; Linux connects
# 0.0.0.0/8 destinations to the local host.
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
# IPv6 forms that carry an IPv4 address a relay or translator will deliver to: the embedded
# address decides. 2002::/16 is 6to4 and 2001::/32 Teredo (ipaddress decodes both), NAT64's
# well-known 64:ff9b::/96 (RFC 6052) ends with the IPv4 address.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# The local-use NAT64 prefix (RFC 8215) is the operator's own translator: private by nature.
# Its embedded address may sit at the /48 layout (bits 48-63 and 72-87, RFC 6052) or in the
# last 32 bits (a /96 inside it): both are checked, and it is refused unless allow_private.
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address] | None:
    """The IPv4 addresses an IPv6 transition address delivers to, or None when it is none."""
    if address.ipv4_mapped is not None:
        return [address.ipv4_mapped]  # ::ffff:169.254.169.254 is 169.254.169.254
    if address.sixtofour is not None:
        return [address.sixtofour]
    if address.teredo is not None:
        return list(address.teredo)  # (server, client): either could be reached
    value = int(address)
    if address in _NAT64:
        return [ipaddress.IPv4Address(value & 0xFFFFFFFF)]
    if address in _NAT64_LOCAL:
        at_48 = ((value >> 64) & 0xFFFF) << 16 | (value >> 40) & 0xFFFF
        # A layout whose bits are all zero is not in use; if neither is, 0.0.0.0 is refused.
        return [ipaddress.IPv4Address(v) for v in (at_48, value & 0xFFFFFFFF) if v] or [
            ipaddress.IPv4Address(0)]
    return None


def refusal(address: IPAddress, *, allow_private: bool) -> str | None:
    """Why connecting to `address` is refused, or None when it is allowed. Pure."""
    if isinstance(address, ipaddress.IPv6Address) and (
            embedded := _embedded_ipv4(address)) is not None:
        for inner in embedded:
            reason = refusal(inner, allow_private=allow_private)
            if reason is not None:
                return reason if address.ipv4_mapped is not None else \
                    f"an IPv6 address embedding {inner}, which is {reason}"
        if address in _NAT64_LOCAL and not allow_private:
            return _PRIVATE
        return None  # a public IPv4 behind a public relay or translator
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_loopback:  # before is_reserved, which includes ::1
        return None if allow_private else _PRIVATE
    if (address.is_multicast or address.is_unspecified or address.is_reserved
            or address in _THIS_NETWORK):
        return "not a unicast host address"
    if not allow_private and not address.is_global:
        # is_global is False for RFC 1918, unique-local (fc00::/7), CGNAT (100.64/10) and the
        # documentation/benchmark ranges.
        return _PRIVATE
    return None


async def check_endpoints(text: str, *, allow_private: bool) -> str:
    """An endpoint setting listing one or more servers, each checked as check_endpoint does,
    normalized and joined by ", "; ValueError naming the server at fault."""
    try:
        urls = split_endpoints(text)
    except ConfigError as exc:
        raise ValueError(str(exc).removeprefix("SILMA endpoint ").capitalize()) from None
    checked = []
    for url in urls:
        try:
            checked.append(await check_endpoint(url, allow_private=allow_private))
        except ValueError as exc:
            raise ValueError(f"{url[:80]}: {exc}" if len(urls) > 1 else str(exc)) from None
    return ", ".join(checked)


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


# -- connect-time enforcement ---------------------------------------------------------------


class GuardRefused(OSError):
    """A connection the SSRF guard refused; an OSError so aiohttp reports it as a connect
    error (ClientConnectorError) carrying this message."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EACCES, message)


def _address(host: str) -> IPAddress:
    # The scope of an IPv6 link-local address ("fe80::1%eth0") is not part of the address.
    return ipaddress.ip_address(host.split("%")[0])


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, refusing a name when any address it resolves to is forbidden.

    Runs on every lookup aiohttp makes (its DNS cache keeps only results that passed), so a
    name re-pointed at an internal address after it was saved is refused when connecting.
    """

    def __init__(self, *, allow_private: bool, inner: AbstractResolver | None = None) -> None:
        self.allow_private = allow_private
        self._inner = inner if inner is not None else aiohttp.DefaultResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            try:
                address = _address(result["host"])
            except ValueError:
                raise GuardRefused(f"{host} resolves to {result['host']!r}, not an IP address") \
                    from None
            reason = refusal(address, allow_private=self.allow_private)
            if reason is not None:
                raise GuardRefused(f"{host} resolves to {address}, which is {reason}")
        return results

    async def close(self) -> None:
        await self._inner.close()


AddrInfo = tuple[Any, Any, int, str, tuple[Any, ...]]


def guarded_socket_factory(*, allow_private: bool) -> Callable[[AddrInfo], socket.socket]:
    """A TCPConnector socket_factory that refuses to create a socket for a forbidden address:
    the last check, on the exact address about to be connected (IP literals included)."""

    def factory(addr_info: AddrInfo) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        address = _address(str(sockaddr[0]))
        reason = refusal(address, allow_private=allow_private)
        if reason is not None:
            raise GuardRefused(f"refused to connect to {address}: it is {reason}")
        return socket.socket(family=family, type=type_, proto=proto)

    return factory


def guarded_connector(*, allow_private: bool, ssl: ssl.SSLContext | bool = True,
                      resolver: AbstractResolver | None = None) -> aiohttp.TCPConnector:
    """A connector enforcing the guard on every connection. `resolver` is the lookup under
    the guard (tests inject one); aiohttp's default resolver otherwise."""
    return aiohttp.TCPConnector(
        ssl=ssl, limit=0,
        resolver=GuardedResolver(allow_private=allow_private, inner=resolver),
        socket_factory=guarded_socket_factory(allow_private=allow_private))


class RedirectRefused(aiohttp.ClientError):
    """A user-chosen TTS endpoint answered with a redirect; it is never followed."""


async def _refuse_redirect(_: aiohttp.ClientSession, __: Any,
                           params: aiohttp.TraceRequestRedirectParams) -> None:
    # Requests pass allow_redirects=False; this catches what cannot (ws_connect follows
    # redirects with no option to stop it). The response is released before refusing.
    status = params.response.status
    params.response.close()
    raise RedirectRefused(f"the TTS endpoint answered {status} (a redirect): not followed")


def guarded_session(*, allow_private: bool, ssl: ssl.SSLContext | bool = True,
                    resolver: AbstractResolver | None = None) -> aiohttp.ClientSession:
    """The session for user-chosen TTS endpoints: the guard on every connection, redirects
    refused. No proxies from the environment (trust_env False: a proxy would connect for us,
    out of the guard's sight) and no automatic decompression (a small gzip body can inflate
    past every size bound before we count it). The caller closes it."""
    redirects = aiohttp.TraceConfig()
    redirects.on_request_redirect.append(_refuse_redirect)
    return aiohttp.ClientSession(
        connector=guarded_connector(allow_private=allow_private, ssl=ssl, resolver=resolver),
        trust_env=False, auto_decompress=False, trace_configs=[redirects])
