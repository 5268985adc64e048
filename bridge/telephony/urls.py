"""Public URLs: the ones we hand to providers and the ones they sign.

Behind a TLS proxy the request we receive has another scheme, host and port than the one the
provider made, so every URL is rebuilt from the configured public base URL
(http(s)://host[:port][/prefix]), never from the request's Host header. A path prefix in the base
is the part the proxy adds in front of our routes: `path` / `path_qs` are our own route paths
(what the server sees, e.g. aiohttp's `request.path_qs`), and the prefix goes in front of them.
"""

from __future__ import annotations

from urllib.parse import urlsplit

_WS_SCHEMES = {"http": "ws", "https": "wss"}


def stream_url(public_url: str, path: str) -> str:
    """The ws(s):// URL a provider should open for the media stream at our route `path`.

    >>> stream_url("https://a.example.com/base", "/twilio/stream")
    'wss://a.example.com/base/twilio/stream'
    """
    if "?" in path:
        raise ValueError(f"stream path {path!r} has a query string, which Twilio drops")
    return _base(public_url, websocket=True) + _checked_path(path)


def public_request_url(public_url: str, path_qs: str) -> str:
    """The http(s):// URL the provider requested (and signed) for our route `path_qs`."""
    return _base(public_url, websocket=False) + _checked_path(path_qs)


def websocket_request_url(public_url: str, path_qs: str) -> str:
    """The ws(s):// URL the provider requested (and signed) for the WebSocket upgrade."""
    return _base(public_url, websocket=True) + _checked_path(path_qs)


def _base(public_url: str, *, websocket: bool) -> str:
    parts = urlsplit(public_url)
    if parts.scheme not in _WS_SCHEMES or not parts.hostname:
        raise ValueError(f"public URL {public_url!r} must be http(s)://host[:port][/prefix]")
    if parts.query or parts.fragment or "?" in public_url:
        raise ValueError(f"public URL {public_url!r} must not have a query or fragment")
    scheme = _WS_SCHEMES[parts.scheme] if websocket else parts.scheme
    return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def _checked_path(path: str) -> str:
    if not path.startswith("/"):
        raise ValueError(f"path {path!r} must start with '/'")
    return path
