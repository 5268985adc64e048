"""Optional API key: `Authorization: Bearer <key>`, compared in constant time. Never logged."""

from __future__ import annotations

import hmac
from collections.abc import Mapping

_SCHEME = "bearer "


def is_authorized(headers: Mapping[str, str], api_key: str) -> bool:
    """True when no key is configured, or the request carries exactly that key."""
    if not api_key:
        return True
    header = headers.get("Authorization", "")
    if header[: len(_SCHEME)].lower() != _SCHEME:
        return False
    offered = header[len(_SCHEME) :].strip()
    return hmac.compare_digest(offered.encode(), api_key.encode())
