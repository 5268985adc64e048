"""The client's address behind trusted proxies: only trusted hops are skipped."""

from __future__ import annotations

import pytest

from bridge.web.forwarded import client_address, parse_networks

PROXY = parse_networks("127.0.0.1, 10.0.0.0/8")


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    assert client_address("127.0.0.1", ["203.0.113.9"], ()) == "127.0.0.1"


def test_a_trusted_proxy_names_the_client() -> None:
    assert client_address("127.0.0.1", ["203.0.113.9"], PROXY) == "203.0.113.9"


def test_an_untrusted_peer_cannot_choose_its_address() -> None:
    assert client_address("198.51.100.7", ["203.0.113.9"], PROXY) == "198.51.100.7"


def test_a_spoofed_left_entry_is_ignored() -> None:
    # The client sent "1.1.1.1" itself; our proxy appended the address it really saw.
    assert client_address("127.0.0.1", ["1.1.1.1, 203.0.113.9"], PROXY) == "203.0.113.9"


def test_a_chain_of_trusted_proxies_is_walked() -> None:
    assert client_address("127.0.0.1", ["203.0.113.9, 10.1.2.3"], PROXY) == "203.0.113.9"
    assert client_address("127.0.0.1", ["203.0.113.9", "10.1.2.3"], PROXY) == "203.0.113.9"


def test_garbage_stops_at_the_last_trusted_hop() -> None:
    assert client_address("127.0.0.1", ["not-an-ip"], PROXY) == "127.0.0.1"
    assert client_address("127.0.0.1", ["[2001:db8::1]:443"], PROXY) == "[2001:db8::1]:443"


def test_no_header_keeps_the_peer() -> None:
    assert client_address("127.0.0.1", [], PROXY) == "127.0.0.1"
    assert client_address(None, [], PROXY) == "unknown"


def test_networks_that_do_not_parse_are_named() -> None:
    with pytest.raises(ValueError, match=r"'10\.0\.0\.300'"):
        parse_networks("127.0.0.1, 10.0.0.300")
    assert parse_networks("") == ()
