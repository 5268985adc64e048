"""Plivo's webhook side: the answer XML (<Stream> with extraHeaders) and X-Plivo-Signature-V3
checks for GET and POST requests."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import xml.etree.ElementTree as ET

import pytest
from plivo.utils import validate_v3_signature

from bridge.telephony.plivo import (
    NONCE_HEADER,
    SIGNATURE_HEADER,
    PlivoCodec,
    build_answer_xml,
    compute_signature,
    validate_signature,
)
from bridge.telephony.urls import public_request_url, stream_url

URL = "wss://bridge.example.com/plivo/stream"


def _stream(xml: str) -> ET.Element:
    root = ET.fromstring(xml)
    assert root.tag == "Response"
    [stream] = list(root)
    assert stream.tag == "Stream"
    return stream


# --- answer XML -------------------------------------------------------------------------------


def test_bidirectional_stream_with_extra_headers() -> None:
    stream = _stream(build_answer_xml(URL, {"tenant": "acme", "voice": "v1"}))
    assert stream.attrib == {
        "bidirectional": "true",
        "keepCallAlive": "true",
        "contentType": "audio/x-mulaw;rate=8000",
        "extraHeaders": "tenant=acme,voice=v1",
    }
    # The URL is the element's text, exactly: no indentation around it.
    assert stream.text == URL
    assert list(stream) == []


def test_no_extra_headers_means_no_attribute() -> None:
    stream = _stream(build_answer_xml(URL, {}))
    assert "extraHeaders" not in stream.attrib
    assert stream.text == URL


def test_content_type_matches_what_play_audio_declares() -> None:
    stream = _stream(build_answer_xml(URL, {}))
    media = json.loads(PlivoCodec("s1").media(b"\xff"))["media"]
    assert stream.attrib["contentType"] == f"{media['contentType']};rate={media['sampleRate']}"


def test_url_text_is_xml_escaped() -> None:
    url = "wss://bridge.example.com/plivo/a&b<c>/stream"
    xml = build_answer_xml(url, {})
    assert "a&amp;b&lt;c&gt;" in xml
    assert _stream(xml).text == url


def test_local_ws_url_is_allowed() -> None:
    assert _stream(build_answer_xml("ws://127.0.0.1:8080/plivo/stream", {})).text == (
        "ws://127.0.0.1:8080/plivo/stream"
    )


@pytest.mark.parametrize("url", [URL + "?tenant=acme", URL + "?"])
def test_query_string_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="query string"):
        build_answer_xml(url, {})


@pytest.mark.parametrize("url", ["https://bridge.example.com/plivo/stream", "/plivo/stream"])
def test_non_websocket_url_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="wss://"):
        build_answer_xml(url, {})


@pytest.mark.parametrize(
    "headers",
    [
        {"tenant-id": "acme"},
        {"tenant_id": "acme"},
        {"tenant": "ac me"},
        {"tenant": "a=b"},
        {"tenant": "a,b"},
        {"tenant": "a;b"},
        {"tenant": 'a"b'},
        {"tenant": "caf\u00e9"},
        {"tenant": "\u0663"},  # an Arabic-Indic digit: alphanumeric, but not ASCII
        {"": "acme"},
        {"tenant": ""},
    ],
)
def test_extra_headers_must_be_ascii_alphanumeric(headers: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="only ASCII letters and digits"):
        build_answer_xml(URL, headers)


def test_extra_headers_at_most_512_bytes() -> None:
    fits = {"k": "v" * 510}  # "k=" + 510 = 512 bytes
    assert _stream(build_answer_xml(URL, fits)).attrib["extraHeaders"] == "k=" + "v" * 510
    with pytest.raises(ValueError, match=r"513 bytes.*at most 512"):
        build_answer_xml(URL, {"k": "v" * 511})
    with pytest.raises(ValueError, match="at most 512"):
        build_answer_xml(URL, {f"k{i}": "v" * 20 for i in range(30)})


def test_stream_url_feeds_build_answer_xml() -> None:
    url = stream_url("https://a.example.com/base", "/plivo/stream")
    assert _stream(build_answer_xml(url, {"tenant": "acme"})).text == (
        "wss://a.example.com/base/plivo/stream"
    )


# --- X-Plivo-Signature-V3 ---------------------------------------------------------------------

TOKEN = "MjA5ZjE4ZTU0YzA1ZmYwZGQ4OTM3ZTQ1"
NONCE = "05429567804466091622"
ANSWER_URL = "https://bridge.example.com/plivo/answer"
FORM = {
    "CallUUID": "4d3c5b1a-7e2f-4a60-9b8c-0d1e2f3a4b5c",
    "From": "14155551234",
    "To": "18005551212",
    "Direction": "inbound",
    "CallStatus": "ringing",
}


def _hmac(signed: str) -> str:
    digest = hmac.new(TOKEN.encode(), f"{signed}.{NONCE}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def test_header_names() -> None:
    assert SIGNATURE_HEADER == "X-Plivo-Signature-V3"
    assert NONCE_HEADER == "X-Plivo-Signature-V3-Nonce"


def test_compute_post_follows_the_sdk_scheme() -> None:
    # base64(HMAC-SHA256(token, URL + "?" + sorted name+value pairs + "." + nonce)), by hand.
    signed = ANSWER_URL + "?" + "".join(k + FORM[k] for k in sorted(FORM))
    assert compute_signature(TOKEN, "POST", ANSWER_URL, NONCE, FORM) == _hmac(signed)


def test_compute_post_with_a_query_string() -> None:
    url = ANSWER_URL + "?tenant=acme&a=1"
    signed = ANSWER_URL + "?a=1&tenant=acme." + "".join(k + FORM[k] for k in sorted(FORM))
    assert compute_signature(TOKEN, "POST", url, NONCE, FORM) == _hmac(signed)


def test_compute_get_follows_the_sdk_scheme() -> None:
    url = ANSWER_URL + "?To=18005551212&CallUUID=abc&From=14155551234"
    signed = ANSWER_URL + "?CallUUID=abc&From=14155551234&To=18005551212"
    assert compute_signature(TOKEN, "GET", url, NONCE, {}) == _hmac(signed)
    assert compute_signature(TOKEN, "GET", ANSWER_URL, NONCE, {}) == _hmac(ANSWER_URL)


@pytest.mark.parametrize(
    ("method", "url", "params"),
    [
        ("POST", ANSWER_URL, FORM),
        ("POST", ANSWER_URL + "?tenant=acme", FORM),
        ("POST", ANSWER_URL, {}),
        ("GET", ANSWER_URL + "?CallUUID=abc&From=1", {}),
        ("GET", ANSWER_URL, {}),
    ],
)
def test_compute_agrees_with_the_sdk_validator(
    method: str, url: str, params: dict[str, str]
) -> None:
    signature = compute_signature(TOKEN, method, url, NONCE, params)
    assert validate_v3_signature(method, url, NONCE, TOKEN, signature, dict(params))
    assert validate_signature(TOKEN, method, url, NONCE, signature, params)


def test_valid_post_webhook() -> None:
    signature = compute_signature(TOKEN, "POST", ANSWER_URL, NONCE, FORM)
    assert validate_signature(TOKEN, "POST", ANSWER_URL, NONCE, signature, FORM)


def test_valid_get_webhook_in_any_query_order() -> None:
    url = ANSWER_URL + "?CallUUID=abc&From=14155551234"
    signature = compute_signature(TOKEN, "GET", url, NONCE, {})
    assert validate_signature(TOKEN, "GET", url, NONCE, signature, {})
    reordered = ANSWER_URL + "?From=14155551234&CallUUID=abc"
    assert validate_signature(TOKEN, "GET", reordered, NONCE, signature, {})
    assert not validate_signature(TOKEN, "GET", url + "&Digits=1", NONCE, signature, {})


def test_method_is_case_insensitive() -> None:
    signature = compute_signature(TOKEN, "post", ANSWER_URL, NONCE, FORM)
    assert validate_signature(TOKEN, "Post", ANSWER_URL, NONCE, signature, FORM)


def test_get_and_post_signatures_differ() -> None:
    url = ANSWER_URL + "?tenant=acme"
    signature = compute_signature(TOKEN, "POST", url, NONCE, FORM)
    assert not validate_signature(TOKEN, "GET", url, NONCE, signature, FORM)


def test_tampered_param() -> None:
    signature = compute_signature(TOKEN, "POST", ANSWER_URL, NONCE, FORM)
    tampered = {**FORM, "From": "10000000000"}
    assert not validate_signature(TOKEN, "POST", ANSWER_URL, NONCE, signature, tampered)


def test_added_or_removed_param() -> None:
    signature = compute_signature(TOKEN, "POST", ANSWER_URL, NONCE, FORM)
    added = {**FORM, "Digits": "1"}
    removed = {k: v for k, v in FORM.items() if k != "To"}
    assert not validate_signature(TOKEN, "POST", ANSWER_URL, NONCE, signature, added)
    assert not validate_signature(TOKEN, "POST", ANSWER_URL, NONCE, signature, removed)


def test_tampered_url() -> None:
    signature = compute_signature(TOKEN, "POST", ANSWER_URL, NONCE, FORM)
    other = "https://bridge.example.com/plivo/other"
    assert not validate_signature(TOKEN, "POST", other, NONCE, signature, FORM)
    assert not validate_signature(TOKEN, "POST", ANSWER_URL + "?x=1", NONCE, signature, FORM)


def test_tampered_nonce() -> None:
    signature = compute_signature(TOKEN, "POST", ANSWER_URL, NONCE, FORM)
    assert not validate_signature(TOKEN, "POST", ANSWER_URL, NONCE + "1", signature, FORM)


def test_wrong_token() -> None:
    signature = compute_signature("another-token", "POST", ANSWER_URL, NONCE, FORM)
    assert not validate_signature(TOKEN, "POST", ANSWER_URL, NONCE, signature, FORM)


@pytest.mark.parametrize(
    ("nonce", "signature"), [(None, "x"), ("", "x"), (NONCE, None), (NONCE, ""), (None, None)]
)
def test_missing_headers(nonce: str | None, signature: str | None) -> None:
    if signature == "x":
        signature = compute_signature(TOKEN, "POST", ANSWER_URL, NONCE, FORM)
    assert not validate_signature(TOKEN, "POST", ANSWER_URL, nonce, signature, FORM)


def test_empty_token_never_validates() -> None:
    # Anyone can compute an HMAC with an empty key: an unset token must not open the door.
    signature = compute_signature("", "POST", ANSWER_URL, NONCE, FORM)
    assert not validate_signature("", "POST", ANSWER_URL, NONCE, signature, FORM)


@pytest.mark.parametrize("separator", [",", ", ", " , "])
def test_several_signatures_one_valid(separator: str) -> None:
    valid = compute_signature(TOKEN, "POST", ANSWER_URL, NONCE, FORM)
    stale = compute_signature("rotated-out-token", "POST", ANSWER_URL, NONCE, FORM)
    for header in (stale + separator + valid, valid + separator + stale):
        assert validate_signature(TOKEN, "POST", ANSWER_URL, NONCE, header, FORM)


def test_several_signatures_none_valid() -> None:
    stale = [compute_signature(f"old-{i}", "POST", ANSWER_URL, NONCE, FORM) for i in range(3)]
    assert not validate_signature(TOKEN, "POST", ANSWER_URL, NONCE, ",".join(stale), FORM)
    assert not validate_signature(TOKEN, "POST", ANSWER_URL, NONCE, ",,", FORM)


def test_params_are_not_modified() -> None:
    # The SDK merges the URL's query into the params dict it gets; ours must stay as passed.
    url = ANSWER_URL + "?tenant=acme"
    params = dict(FORM)
    signature = compute_signature(TOKEN, "GET", url, NONCE, params)
    assert validate_signature(TOKEN, "GET", url, NONCE, signature, params)
    assert params == FORM


def test_undecodable_header_bytes_do_not_raise() -> None:
    # Servers hand undecodable header bytes over as lone surrogates.
    signature = compute_signature(TOKEN, "POST", ANSWER_URL, NONCE, FORM)
    assert not validate_signature(TOKEN, "POST", ANSWER_URL, NONCE, "\udcff" + signature, FORM)
    assert not validate_signature(TOKEN, "POST", ANSWER_URL, "\udcff", signature, FORM)


@pytest.mark.parametrize("url", ["wss://bridge.example.com/plivo/stream", "/plivo/answer"])
def test_signed_url_must_be_http(url: str) -> None:
    with pytest.raises(ValueError, match="http:// or https://"):
        validate_signature(TOKEN, "GET", url, NONCE, "sig", {})
    with pytest.raises(ValueError, match="http:// or https://"):
        compute_signature(TOKEN, "GET", url, NONCE, {})


@pytest.mark.parametrize("method", ["PUT", "DELETE", ""])
def test_only_get_and_post(method: str) -> None:
    with pytest.raises(ValueError, match="only GET and POST"):
        validate_signature(TOKEN, method, ANSWER_URL, NONCE, "sig", {})
    with pytest.raises(ValueError, match="only GET and POST"):
        compute_signature(TOKEN, method, ANSWER_URL, NONCE, {})


def test_proxied_webhook_validates_against_the_public_url() -> None:
    # Plivo signed the public https URL; behind a proxy we see http://10.0.0.5:8080, so the
    # request's own URL fails and the one rebuilt from the public base passes.
    seen_path_qs = "/plivo/answer?tenant=acme"
    public = "https://bridge.example.com" + seen_path_qs
    signature = compute_signature(TOKEN, "POST", public, NONCE, FORM)
    local = "http://10.0.0.5:8080" + seen_path_qs
    assert not validate_signature(TOKEN, "POST", local, NONCE, signature, FORM)
    rebuilt = public_request_url("https://bridge.example.com", seen_path_qs)
    assert validate_signature(TOKEN, "POST", rebuilt, NONCE, signature, FORM)
