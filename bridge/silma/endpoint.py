"""Where a SILMA TTS server lives: one configured URL gives its WebSocket, HTTP and health URLs.
An endpoint setting may list several servers (a fleet), separated by commas or white space.

`https://host/api` -> wss://host/api/ws, https://host/api/synthesize, https://host/api/health.
A `ws(s)://` URL is the WebSocket as given; its HTTP side is the same path without a trailing /ws.
Credentials never go in a URL: the API key travels in the Authorization header.
"""

from __future__ import annotations

import dataclasses
import re
from urllib.parse import urlsplit, urlunsplit

from bridge.errors import ConfigError

MAX_SERVERS = 8  # servers one endpoint setting may list
_SEPARATORS = re.compile(r"[,\s]+")
_HTTP_FOR_WS = {"ws": "http", "wss": "https"}
_WS_FOR_HTTP = {"http": "ws", "https": "wss"}


@dataclasses.dataclass(frozen=True, slots=True)
class Endpoint:
    ws_url: str
    http_base: str

    @property
    def synthesize_url(self) -> str:
        return f"{self.http_base}/synthesize"

    @property
    def health_url(self) -> str:
        return f"{self.http_base}/health"


def parse_endpoint(url: str) -> Endpoint:
    parts = urlsplit(url.strip())
    if parts.scheme not in _HTTP_FOR_WS and parts.scheme not in _WS_FOR_HTTP:
        raise ConfigError(f"SILMA endpoint must be http(s):// or ws(s)://, not {url!r}")
    if not parts.hostname:
        raise ConfigError(f"SILMA endpoint has no host: {url!r}")
    if parts.username or parts.password or parts.query:
        raise ConfigError("SILMA endpoint must not carry credentials or a query string")
    path = parts.path.rstrip("/")
    if parts.scheme in _HTTP_FOR_WS:
        ws_url = urlunsplit((parts.scheme, parts.netloc, path or "/", "", ""))
        http_path = path[: -len("/ws")] if path.endswith("/ws") else path
        http_base = urlunsplit((_HTTP_FOR_WS[parts.scheme], parts.netloc, http_path, "", ""))
    else:
        ws_url = urlunsplit((_WS_FOR_HTTP[parts.scheme], parts.netloc, f"{path}/ws", "", ""))
        http_base = urlunsplit((parts.scheme, parts.netloc, path, "", ""))
    return Endpoint(ws_url=ws_url, http_base=http_base.rstrip("/"))


def split_endpoints(text: str) -> list[str]:
    """The server URLs an endpoint setting lists, in order, each once; ConfigError past
    MAX_SERVERS."""
    urls = list(dict.fromkeys(u for u in _SEPARATORS.split(text.strip()) if u))
    if len(urls) > MAX_SERVERS:
        raise ConfigError(f"SILMA endpoint lists {len(urls)} servers, at most {MAX_SERVERS}")
    return urls


def parse_endpoints(text: str) -> tuple[Endpoint, ...]:
    """Every server an endpoint setting lists (at least one), each parsed."""
    endpoints = tuple(dict.fromkeys(parse_endpoint(u) for u in split_endpoints(text)))
    if not endpoints:
        raise ConfigError("SILMA endpoint is empty")
    return endpoints
