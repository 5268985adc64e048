"""X-Twilio-Signature checks (webhook and WebSocket upgrade) and the public URLs they sign."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from bridge.telephony.twilio import compute_signature, validate_signature
from bridge.telephony.urls import public_request_url, websocket_request_url

TOKEN = "0123456789abcdef0123456789abcdef"
ANSWER_URL = "https://bridge.example.com/twilio/answer?tenant=acme"
UPGRADE_URL = "wss://bridge.example.com/twilio/stream"
FORM = {
    "CallSid": "CAXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
    "AccountSid": "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
    "From": "+12349013030",
    "To": "+18005551212",
    "CallStatus": "ringing",
}


def test_compute_signature_follows_the_documented_scheme() -> None:
    # base64(HMAC-SHA1(token, URL + each param name+value, sorted by name)), done by hand.
    signed = ANSWER_URL + "".join(k + FORM[k] for k in sorted(FORM))
    digest = hmac.new(TOKEN.encode(), signed.encode(), hashlib.sha1).digest()
    assert compute_signature(TOKEN, ANSWER_URL, FORM) == base64.b64encode(digest).decode()


def test_valid_webhook() -> None:
    signature = compute_signature(TOKEN, ANSWER_URL, FORM)
    assert validate_signature(TOKEN, ANSWER_URL, FORM, signature)


def test_tampered_param() -> None:
    signature = compute_signature(TOKEN, ANSWER_URL, FORM)
    assert not validate_signature(TOKEN, ANSWER_URL, {**FORM, "From": "+10000000000"}, signature)


def test_added_or_removed_param() -> None:
    signature = compute_signature(TOKEN, ANSWER_URL, FORM)
    assert not validate_signature(TOKEN, ANSWER_URL, {**FORM, "Digits": "1"}, signature)
    assert not validate_signature(
        TOKEN, ANSWER_URL, {k: v for k, v in FORM.items() if k != "To"}, signature
    )


def test_tampered_url() -> None:
    signature = compute_signature(TOKEN, ANSWER_URL, FORM)
    other = "https://bridge.example.com/twilio/answer?tenant=evil"
    assert not validate_signature(TOKEN, other, FORM, signature)


def test_wrong_token() -> None:
    signature = compute_signature("another-token", ANSWER_URL, FORM)
    assert not validate_signature(TOKEN, ANSWER_URL, FORM, signature)


@pytest.mark.parametrize("signature", [None, ""])
def test_missing_header(signature: str | None) -> None:
    assert not validate_signature(TOKEN, ANSWER_URL, FORM, signature)


def test_empty_token_never_validates() -> None:
    # Anyone can compute an HMAC with an empty key: an unset token must not open the door.
    signature = compute_signature("", ANSWER_URL, FORM)
    assert not validate_signature("", ANSWER_URL, FORM, signature)


def test_port_in_url_is_tolerated_both_ways() -> None:
    # Twilio may sign with or without the default port; the SDK checks both forms.
    with_port = "https://bridge.example.com:443/twilio/answer"
    without_port = "https://bridge.example.com/twilio/answer"
    assert validate_signature(TOKEN, with_port, FORM, compute_signature(TOKEN, without_port, FORM))
    assert validate_signature(TOKEN, without_port, FORM, compute_signature(TOKEN, with_port, FORM))


def test_websocket_upgrade() -> None:
    signature = compute_signature(TOKEN, UPGRADE_URL, {})
    assert validate_signature(TOKEN, UPGRADE_URL, {}, signature)
    assert not validate_signature("another-token", UPGRADE_URL, {}, signature)
    assert not validate_signature(TOKEN, "wss://bridge.example.com/twilio/other", {}, signature)
    assert not validate_signature(TOKEN, "https://bridge.example.com/twilio/stream", {}, signature)
    assert not validate_signature(TOKEN, UPGRADE_URL, {}, None)


# --- rebuilding the URL Twilio signed behind a TLS proxy --------------------------------------


@pytest.mark.parametrize(
    ("public", "path_qs", "expected"),
    [
        (
            "https://bridge.example.com",
            "/twilio/answer?tenant=acme",
            "https://bridge.example.com/twilio/answer?tenant=acme",
        ),
        (
            "https://bridge.example.com/base/",
            "/twilio/answer",
            "https://bridge.example.com/base/twilio/answer",
        ),
        ("http://127.0.0.1:8080", "/twilio/answer", "http://127.0.0.1:8080/twilio/answer"),
    ],
)
def test_public_request_url(public: str, path_qs: str, expected: str) -> None:
    assert public_request_url(public, path_qs) == expected


@pytest.mark.parametrize(
    ("public", "expected"),
    [
        ("https://bridge.example.com", "wss://bridge.example.com/twilio/stream"),
        ("https://bridge.example.com/base", "wss://bridge.example.com/base/twilio/stream"),
        ("http://127.0.0.1:8080", "ws://127.0.0.1:8080/twilio/stream"),
    ],
)
def test_websocket_request_url(public: str, expected: str) -> None:
    assert websocket_request_url(public, "/twilio/stream") == expected


def test_proxied_webhook_validates_against_the_public_url() -> None:
    # Twilio signed the public https URL; we sit behind a proxy on http://10.0.0.5:8080, so the
    # request's own URL fails and the one rebuilt from the public base passes.
    signature = compute_signature(TOKEN, ANSWER_URL, FORM)
    seen_path_qs = "/twilio/answer?tenant=acme"
    assert not validate_signature(TOKEN, "http://10.0.0.5:8080" + seen_path_qs, FORM, signature)
    rebuilt = public_request_url("https://bridge.example.com", seen_path_qs)
    assert validate_signature(TOKEN, rebuilt, FORM, signature)


def test_proxied_upgrade_validates_against_the_public_wss_url() -> None:
    signature = compute_signature(TOKEN, UPGRADE_URL, {})
    rebuilt = websocket_request_url("https://bridge.example.com", "/twilio/stream")
    assert validate_signature(TOKEN, rebuilt, {}, signature)


@pytest.mark.parametrize("path_qs", ["twilio/answer", ""])
def test_request_url_needs_a_rooted_path(path_qs: str) -> None:
    with pytest.raises(ValueError, match="must start with '/'"):
        public_request_url("https://bridge.example.com", path_qs)
    with pytest.raises(ValueError, match="must start with '/'"):
        websocket_request_url("https://bridge.example.com", path_qs)
