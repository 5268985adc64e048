import pytest

from bridge.errors import ConfigError
from bridge.silma.endpoint import parse_endpoint, parse_endpoints, split_endpoints


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


def test_an_endpoint_may_list_several_servers_each_once():
    servers = parse_endpoints(" https://gpu1.example/api, https://gpu2.example/api\n"
                              "wss://gpu3.example/ws https://gpu1.example/api/ ")
    assert [e.ws_url for e in servers] == [
        "wss://gpu1.example/api/ws", "wss://gpu2.example/api/ws", "wss://gpu3.example/ws"]
    assert split_endpoints("http://a, ,http://b") == ["http://a", "http://b"]


def test_a_server_list_is_bounded_and_not_empty():
    with pytest.raises(ConfigError, match="at most"):
        split_endpoints(",".join(f"http://h{i}" for i in range(9)))
    with pytest.raises(ConfigError, match="empty"):
        parse_endpoints(" , ")
    with pytest.raises(ConfigError, match="query"):
        parse_endpoints("http://a, http://b/?key=1")
