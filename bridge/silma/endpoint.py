"""Where a SILMA TTS server lives: one configured URL gives its WebSocket, HTTP and health URLs.
An endpoint setting may list several servers (a fleet), separated by commas or white space.

Our protocol (`api` OURS): `https://host/api` -> wss://host/api/ws, https://host/api/synthesize,
https://host/api/health; a `ws(s)://` URL is the WebSocket as given, its HTTP side the same path
without a trailing /ws. SILMA's public API (`api` V2): the URL is the API base
(`https://api.silma.ai/tts/v2`) -> wss://…/tts/v2/ws/stream and https://…/tts/v2/stream.
Credentials never go in a URL: the API key travels in a header (Authorization: Bearer for ours,
`apiKey` for v2).
"""

from __future__ import annotations

import dataclasses
import re
from urllib.parse import urlsplit, urlunsplit

from bridge.errors import ConfigError
from bridge.silma import v2_protocol as v2

OURS, V2 = "silma", "v2"  # the two APIs an endpoint may speak
APIS = (OURS, V2)
MAX_SERVERS = 8  # servers one endpoint setting may list
_SEPARATORS = re.compile(r"[,\s]+")
_HTTP_FOR_WS = {"ws": "http", "wss": "https"}
_WS_FOR_HTTP = {"http": "ws", "https": "wss"}


@dataclasses.dataclass(frozen=True, slots=True)
class Endpoint:
    ws_url: str
    http_base: str
    api: str = OURS

    @property
    def synthesize_url(self) -> str:
        """Where a request goes over HTTP: our /synthesize, or v2's streamed /stream."""
        return v2.stream_url(self.http_base) if self.api == V2 else f"{self.http_base}/synthesize"

    @property
    def health_url(self) -> str:
        return f"{self.http_base}/health"

    def auth_headers(self, api_key: str) -> dict[str, str]:
        """The API key as this API carries it (none when there is no key)."""
        if not api_key:
            return {}
        return v2.headers(api_key) if self.api == V2 else {"Authorization": f"Bearer {api_key}"}


def parse_endpoint(url: str, api: str = OURS) -> Endpoint:
    if api not in APIS:
        raise ConfigError(f"SILMA API must be one of {', '.join(APIS)}, not {api!r}")
    parts = urlsplit(url.strip())
    if parts.scheme not in _HTTP_FOR_WS and parts.scheme not in _WS_FOR_HTTP:
        raise ConfigError(f"SILMA endpoint must be http(s):// or ws(s)://, not {url!r}")
    if not parts.hostname:
        raise ConfigError(f"SILMA endpoint has no host: {url!r}")
    if parts.username or parts.password or parts.query:
        raise ConfigError("SILMA endpoint must not carry credentials or a query string")
    path = parts.path.rstrip("/")
    if api == V2:
        # The base, whatever scheme it came in; a pasted /ws/stream or /stream URL loses the suffix.
        base_path = path.removesuffix(v2.WS_PATH).removesuffix(v2.HTTP_PATH)
        scheme = _HTTP_FOR_WS.get(parts.scheme, parts.scheme)
        base = urlunsplit((scheme, parts.netloc, base_path, "", "")).rstrip("/")
        return Endpoint(ws_url=v2.ws_url(base), http_base=base, api=V2)
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


def parse_endpoints(text: str, api: str = OURS) -> tuple[Endpoint, ...]:
    """Every server an endpoint setting lists (at least one), each parsed."""
    endpoints = tuple(dict.fromkeys(parse_endpoint(u, api) for u in split_endpoints(text)))
    if not endpoints:
        raise ConfigError("SILMA endpoint is empty")
    return endpoints
