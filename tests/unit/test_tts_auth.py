"""The TTS server's API key: our Bearer header everywhere, SILMA's apiKey header on v2."""

import pytest
from multidict import CIMultiDict

from bridge.tts_server.auth import is_authorized, is_authorized_v2

KEY = "s3cret"


@pytest.mark.parametrize(("headers", "ours", "v2"), [
    ({}, False, False),
    ({"Authorization": f"Bearer {KEY}"}, True, True),
    ({"Authorization": f"bearer {KEY}"}, True, True),
    ({"Authorization": KEY}, False, False),
    ({"apiKey": KEY}, False, True),
    ({"APIKEY": f" {KEY} "}, False, True),
    ({"apiKey": "wrong"}, False, False),
    ({"apiKey": "wrong", "Authorization": f"Bearer {KEY}"}, True, True),
    ({"apiKey": KEY + "x"}, False, False),
])
def test_who_is_let_in(headers, ours, v2):
    given = CIMultiDict(headers)
    assert (is_authorized(given, KEY), is_authorized_v2(given, KEY)) == (ours, v2)


def test_no_key_configured_lets_everyone_in():
    assert is_authorized_v2(CIMultiDict({"apiKey": "anything"}), "")
    assert is_authorized_v2(CIMultiDict(), "")
