"""The answer TwiML (<Connect><Stream> with <Parameter>s) and the stream URL we put in it."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from bridge.telephony.twilio import build_twiml
from bridge.telephony.urls import stream_url

URL = "wss://bridge.example.com/twilio/stream"


def test_connect_stream_with_parameters() -> None:
    xml = build_twiml(URL, {"tenant": "acme", "voice": "v1"})
    assert xml.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    root = ET.fromstring(xml)
    assert root.tag == "Response"
    [connect] = list(root)
    assert connect.tag == "Connect"
    [stream] = list(connect)
    assert stream.tag == "Stream"
    assert stream.attrib == {"url": URL}
    params = [(p.tag, p.attrib) for p in stream]
    assert params == [
        ("Parameter", {"name": "tenant", "value": "acme"}),
        ("Parameter", {"name": "voice", "value": "v1"}),
    ]


def test_nothing_after_connect() -> None:
    # With nothing after <Connect>, the call ends when our server closes the stream.
    root = ET.fromstring(build_twiml(URL, {}))
    assert [el.tag for el in root] == ["Connect"]
    assert list(root[0][0]) == []


def test_values_are_xml_escaped() -> None:
    value = "a<b>&\"c' </Stream><Say>pwned</Say>"
    xml = build_twiml(URL, {"tenant": value})
    assert "<Say>" not in xml
    assert "&lt;b&gt;&amp;&quot;c" in xml
    [param] = ET.fromstring(xml).iter("Parameter")
    assert param.attrib == {"name": "tenant", "value": value}


def test_local_ws_url_is_allowed() -> None:
    root = ET.fromstring(build_twiml("ws://127.0.0.1:8080/twilio/stream", {}))
    assert root[0][0].attrib["url"] == "ws://127.0.0.1:8080/twilio/stream"


@pytest.mark.parametrize("url", [URL + "?tenant=acme", URL + "?"])
def test_query_string_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="query string"):
        build_twiml(url, {})


@pytest.mark.parametrize("url", ["https://bridge.example.com/twilio/stream", "/twilio/stream"])
def test_non_websocket_url_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="wss://"):
        build_twiml(url, {})


@pytest.mark.parametrize(
    ("public", "expected"),
    [
        ("https://a.example.com/base", "wss://a.example.com/base/twilio/stream"),
        ("https://a.example.com/base/", "wss://a.example.com/base/twilio/stream"),
        ("https://a.example.com", "wss://a.example.com/twilio/stream"),
        ("https://a.example.com/", "wss://a.example.com/twilio/stream"),
        ("https://a.example.com:8443", "wss://a.example.com:8443/twilio/stream"),
        ("http://127.0.0.1:8080", "ws://127.0.0.1:8080/twilio/stream"),
        ("HTTPS://a.example.com", "wss://a.example.com/twilio/stream"),
    ],
)
def test_stream_url(public: str, expected: str) -> None:
    assert stream_url(public, "/twilio/stream") == expected


@pytest.mark.parametrize(
    ("public", "path", "message"),
    [
        ("ftp://a.example.com", "/s", "must be http"),
        ("a.example.com", "/s", "must be http"),
        ("https://", "/s", "must be http"),
        ("https://a.example.com?x=1", "/s", "query or fragment"),
        ("https://a.example.com#top", "/s", "query or fragment"),
        ("https://a.example.com", "twilio/stream", "must start with '/'"),
        ("https://a.example.com", "/twilio/stream?x=1", "query string"),
    ],
)
def test_stream_url_refuses(public: str, path: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        stream_url(public, path)


def test_stream_url_feeds_build_twiml() -> None:
    url = stream_url("https://a.example.com/base", "/twilio/stream")
    root = ET.fromstring(build_twiml(url, {"tenant": "acme"}))
    assert root[0][0].attrib["url"] == "wss://a.example.com/base/twilio/stream"
