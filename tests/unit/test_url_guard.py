"""The SSRF guard on user-entered TTS endpoints. Name lookups are faked: no DNS, no sockets
(connect-time enforcement on real sockets is in tests/integration/test_hostile_tts.py)."""

import asyncio
import ipaddress
import re
import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from bridge.web.url_guard import (
    GuardedResolver,
    GuardRefused,
    check_endpoint,
    check_endpoints,
    guarded_socket_factory,
    refusal,
)


@pytest.fixture
async def dns(monkeypatch):
    """Fake name resolution: name -> addresses (a missing name does not resolve)."""
    table: dict[str, list[str]] = {}
    loop = asyncio.get_running_loop()

    async def getaddrinfo(host, port, *, type=0, **_):
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, type, 6, "", (a, port))
                for a in table[host]]

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    return table


@pytest.mark.parametrize("url", [
    "ftp://8.8.8.8/", "file:///etc/passwd", "javascript:alert(1)", "8.8.8.8:9000", "",
    "gopher://8.8.8.8/",
])
async def test_only_http_and_websocket_schemes(url):
    with pytest.raises(ValueError, match="http://, https://, ws:// or wss://"):
        await check_endpoint(url, allow_private=True)


@pytest.mark.parametrize("url, needle", [
    ("https://user:pw@8.8.8.8/api", "credentials"),
    ("https://8.8.8.8/api?key=secret", "query"),
    ("https:///api", "no host"),
    ("https://8.8.8.8:99999/", "valid URL"),
    ("https://[::1/", "valid URL"),
    ("https://8.8.8.8/api#frag", "fragment"),
])
async def test_malformed_urls_are_refused_with_a_reason(url, needle):
    with pytest.raises(ValueError, match=needle):
        await check_endpoint(url, allow_private=True)


@pytest.mark.parametrize("host, reason", [
    ("169.254.169.254", "metadata"),
    ("[fd00:ec2::254]", "metadata"),
    ("100.100.100.200", "metadata"),
    ("192.0.0.192", "metadata"),
    ("169.254.10.1", "link-local"),
    ("[fe80::1]", "link-local"),
    ("[::ffff:169.254.169.254]", "metadata"),
    ("0.0.0.0", "not a unicast"),
    ("224.0.0.1", "not a unicast"),
    ("240.0.0.1", "not a unicast"),
])
async def test_link_local_and_metadata_refused_even_when_private_allowed(host, reason):
    with pytest.raises(ValueError, match=reason):
        await check_endpoint(f"http://{host}/api", allow_private=True)


@pytest.mark.parametrize("host", [
    "127.0.0.1", "10.1.2.3", "172.16.0.9", "192.168.1.20", "100.64.0.1", "[::1]", "[fd12:3456::1]",
])
async def test_private_refused_unless_allowed(host):
    with pytest.raises(ValueError, match="loopback or private"):
        await check_endpoint(f"http://{host}:9000", allow_private=False)
    assert await check_endpoint(f"http://{host}:9000", allow_private=True) == \
        f"http://{host}:9000"


async def test_public_addresses_pass_normalized():
    assert await check_endpoint("  WSS://8.8.8.8:8443/tts/ws/ ", allow_private=False) == \
        "wss://8.8.8.8:8443/tts/ws"
    assert await check_endpoint("https://[2606:4700:4700::1111]/api", allow_private=False) == \
        "https://[2606:4700:4700::1111]/api"


async def test_names_are_resolved_and_every_address_checked(dns):
    dns["tts.example.com"] = ["93.184.216.34"]
    dns["sneaky.example.com"] = ["93.184.216.34", "169.254.169.254"]
    dns["intranet.example.com"] = ["93.184.216.34", "10.0.0.7"]
    assert await check_endpoint("HTTPS://TTS.Example.com/api/", allow_private=False) == \
        "https://tts.example.com/api"
    with pytest.raises(ValueError, match=re.escape("sneaky.example.com resolves to 169.254.169.254")):
        await check_endpoint("https://sneaky.example.com/", allow_private=True)
    with pytest.raises(ValueError, match=re.escape("10.0.0.7, which is a loopback or private")):
        await check_endpoint("https://intranet.example.com/", allow_private=False)
    assert await check_endpoint("https://intranet.example.com/", allow_private=True) == \
        "https://intranet.example.com"


async def test_unresolvable_host(dns):
    with pytest.raises(ValueError, match="does not resolve"):
        await check_endpoint("https://nowhere.invalid/api", allow_private=True)


async def test_numeric_host_forms_are_resolved_not_trusted():
    # "2130706433" is 127.0.0.1 to the system resolver (inet_aton), as a connection would see it.
    with pytest.raises(ValueError, match=re.escape("127.0.0.1")):
        await check_endpoint("http://2130706433:9000/", allow_private=False)


# --- the pure rule, range by range ------------------------------------------------------------


@pytest.mark.parametrize("address, reason", [
    ("168.63.129.16", "metadata"),  # Azure wireserver: a "global" address only the host answers
    ("0.0.0.0", "not a unicast"),
    ("0.1.2.3", "not a unicast"),  # "this network": Linux delivers 0/8 to the local host
    ("0.255.255.255", "not a unicast"),
    ("2002:a9fe:a9fe::1", "embedding 169.254.169.254, which is a cloud metadata"),  # 6to4
    ("2002:0:1::", "embedding 0.0.0.1, which is not a unicast"),
    ("2001:0:a9fe:a9fe::1", "embedding 169.254.169.254"),  # Teredo server
    ("2001:0:808:808:0:0:5601:5601", "embedding 169.254.169.254"),  # Teredo client (xor'd)
    ("64:ff9b::a9fe:a9fe", "embedding 169.254.169.254"),  # NAT64 well-known prefix
    ("64:ff9b:1:a9fe:a9:fe00::", "embedding 169.254.169.254"),  # local NAT64, /48 layout
    ("64:ff9b:1::a9fe:a9fe", "embedding 169.254.169.254"),  # local NAT64, /96 layout
    ("64:ff9b:1::", "embedding 0.0.0.0"),
    ("::ffff:168.63.129.16", "metadata"),  # IPv4-mapped
    ("::ffff:0.0.0.1", "not a unicast"),
])
def test_refused_even_when_private_allowed(address: str, reason: str) -> None:
    for allow_private in (True, False):
        found = refusal(ipaddress.ip_address(address), allow_private=allow_private)
        assert found is not None and reason in found, (address, allow_private, found)


@pytest.mark.parametrize("address", [
    "2002:a00:1::1",  # 6to4 of 10.0.0.1
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2001:0:a00:1::f7f7:f7f7",  # Teredo server 10.0.0.1, client 8.8.8.8
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "64:ff9b::6440:1",  # NAT64 of CGNAT 100.64.0.1
    "64:ff9b:1::808:808",  # the local-use NAT64 prefix is the operator's own: private
    "::ffff:10.0.0.1",
])
def test_embedded_private_ipv4_refused_unless_allowed(address: str) -> None:
    assert "private" in (refusal(ipaddress.ip_address(address), allow_private=False) or "")
    assert refusal(ipaddress.ip_address(address), allow_private=True) is None


@pytest.mark.parametrize("address", [
    "8.8.8.8", "2606:4700:4700::1111",
    "2002:808:808::1",  # 6to4 of a public address
    "64:ff9b::808:808",  # NAT64 of a public address
    "2001:0:4136:e378:8000:63bf:f7f7:f7f7",  # Teredo server 65.54.227.120, client 8.8.8.8
])
def test_public_and_public_behind_transition_prefixes_pass(address: str) -> None:
    assert refusal(ipaddress.ip_address(address), allow_private=False) is None


# --- the connect-time resolver ---------------------------------------------------------------


class FakeResolver(AbstractResolver):
    """A lookup table under the guard: name -> addresses, as aiohttp's resolvers answer."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.closed = False

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        return [{"hostname": host, "host": a, "port": port,
                 "family": socket.AF_INET6 if ":" in a else socket.AF_INET,
                 "proto": 0, "flags": 0} for a in self.table[host]]

    async def close(self) -> None:
        self.closed = True


async def test_resolver_refuses_a_name_with_any_forbidden_address_on_every_lookup() -> None:
    inner = FakeResolver({"tts.example.com": ["93.184.216.34"]})
    resolver = GuardedResolver(allow_private=False, inner=inner)
    assert [r["host"] for r in await resolver.resolve("tts.example.com", 443)] == \
        ["93.184.216.34"]
    inner.table["tts.example.com"] = ["93.184.216.34", "169.254.169.254"]  # DNS rebinding
    with pytest.raises(GuardRefused, match=re.escape("resolves to 169.254.169.254")):
        await resolver.resolve("tts.example.com", 443)
    inner.table["tts.example.com"] = ["fe80::1%eth0"]
    with pytest.raises(GuardRefused, match="link-local"):
        await resolver.resolve("tts.example.com", 443)
    inner.table["tts.example.com"] = ["10.0.0.7"]
    with pytest.raises(GuardRefused, match="private"):
        await resolver.resolve("tts.example.com", 443)
    allowing = GuardedResolver(allow_private=True, inner=inner)
    assert len(await allowing.resolve("tts.example.com", 443)) == 1
    await resolver.close()
    assert inner.closed


def test_socket_factory_checks_the_exact_address_connected() -> None:
    factory = guarded_socket_factory(allow_private=False)
    for address in ("127.0.0.1", "169.254.169.254", "0.0.0.0"):
        with pytest.raises(GuardRefused, match=re.escape(address)):
            factory((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, 80)))
    with pytest.raises(GuardRefused, match="metadata"):
        factory((socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::ffff:169.254.169.254", 80, 0, 0)))
    sock = factory((socket.AF_INET, socket.SOCK_STREAM, 6, "", ("8.8.8.8", 80)))
    try:
        assert sock.family == socket.AF_INET and sock.type == socket.SOCK_STREAM
    finally:
        sock.close()


async def test_a_list_of_servers_is_checked_server_by_server():
    assert await check_endpoints(" WSS://8.8.8.8:8443/tts/ws/, https://8.8.4.4/api\n",
                                 allow_private=False) == \
        "wss://8.8.8.8:8443/tts/ws, https://8.8.4.4/api"
    with pytest.raises(ValueError, match=re.escape("http://169.254.169.254/: ")):
        await check_endpoints("https://8.8.8.8/api, http://169.254.169.254/", allow_private=True)
    with pytest.raises(ValueError, match="at most 8"):
        await check_endpoints(" ".join(f"https://8.8.8.{i}/" for i in range(9)),
                              allow_private=False)
