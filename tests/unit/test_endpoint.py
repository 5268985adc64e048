import pytest

from bridge.errors import ConfigError
from bridge.silma.endpoint import parse_endpoint


def test_https_base_gives_wss_ws_and_http_routes():
    e = parse_endpoint("https://tts.example.com/api")
    assert e.ws_url == "wss://tts.example.com/api/ws"
    assert e.synthesize_url == "https://tts.example.com/api/synthesize"
    assert e.health_url == "https://tts.example.com/api/health"


def test_root_http_endpoint():
    e = parse_endpoint("http://127.0.0.1:9000/")
    assert e.ws_url == "ws://127.0.0.1:9000/ws"
    assert e.synthesize_url == "http://127.0.0.1:9000/synthesize"


def test_ws_url_used_as_given():
    e = parse_endpoint("wss://tts.example.com/custom/ws")
    assert e.ws_url == "wss://tts.example.com/custom/ws"
    assert e.health_url == "https://tts.example.com/custom/health"


@pytest.mark.parametrize("bad", ["ftp://x", "tts.example.com", "https://", "https://u:p@h/api",
                                 "https://h/api?key=secret"])
def test_bad_endpoints_refused(bad):
    with pytest.raises(ConfigError):
        parse_endpoint(bad)
