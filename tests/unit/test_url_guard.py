"""The SSRF guard on user-entered TTS endpoints. Name lookups are faked: no DNS, no sockets."""

import asyncio
import re
import socket

import pytest

from bridge.web.url_guard import check_endpoint


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
