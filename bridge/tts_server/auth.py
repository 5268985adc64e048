"""Optional API key: `Authorization: Bearer <key>`, or on SILMA's v2 API also `apiKey: <key>`;
compared in constant time. Never logged."""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from bridge.silma.v2_protocol import API_KEY_HEADER

_SCHEME = "bearer "


def is_authorized(headers: Mapping[str, str], api_key: str) -> bool:
    """True when no key is configured, or the request carries exactly that key."""
    if not api_key:
        return True
    header = headers.get("Authorization", "")
    if header[: len(_SCHEME)].lower() != _SCHEME:
        return False
    return _same(header[len(_SCHEME) :].strip(), api_key)


def is_authorized_v2(headers: Mapping[str, str], api_key: str) -> bool:
    """As `is_authorized`, or with the key in the `apiKey` header, as SILMA's clients send it
    (`headers` is aiohttp's: names are matched in any case)."""
    offered = headers.get(API_KEY_HEADER)
    if offered is not None and api_key and _same(offered.strip(), api_key):
        return True
    return is_authorized(headers, api_key)


def _same(offered: str, api_key: str) -> bool:
    return hmac.compare_digest(offered.encode(), api_key.encode())
