"""Single-use, short-lived tokens that admit one carrier media stream (pure: `now` is injected).

The answer webhook (signed by the carrier) issues a token bound to the call and the user and
puts it in the stream URL's path (Twilio drops query strings from stream URLs). The stream's
upgrade is refused before accept unless its token is genuine, unexpired, names the user of the
path and was never used; the call id it names must then be the one in the stream's start
message. So nobody opens a stream who did not receive a signed webhook's answer, a captured URL
opens nothing once used or expired, and a stream cannot speak for another user or call.

Format: `<payload>.<mac>`, both base64url; payload = `v1 user call_id expiry nonce` (space
separated: none of the parts may hold a space). The key is derived from BRIDGE_SECRET_KEY, so
every bridge of a fleet verifies what any of them issued; single use is remembered per process.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import secrets

TTL_S = 60.0  # the carrier opens the stream within a second or two of fetching the answer
MAX_TOKEN_CHARS = 512
MAX_REMEMBERED = 100_000  # used tokens kept until they expire: bounds memory under a flood
_VERSION = "v1"


class StreamTokenError(ValueError):
    """Why a stream token is refused (safe to log: it names no secret)."""


@dataclasses.dataclass(frozen=True)
class StreamClaims:
    user_id: str
    call_id: str
    expires_at: float
    nonce: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class StreamTokens:
    """Issues and checks stream tokens; remembers the used ones until they expire."""

    def __init__(self, key: bytes, ttl_s: float = TTL_S) -> None:
        self._key = key
        self._ttl_s = ttl_s
        self._used: dict[str, float] = {}  # nonce -> expiry, in issue order (≈ expiry order)

    @classmethod
    def for_secret(cls, secret_key: str) -> StreamTokens:
        """A key of its own derived from the bridge's secret; random when none is set (then
        only this process can verify, so a fleet must set BRIDGE_SECRET_KEY)."""
        if not secret_key:
            return cls(secrets.token_bytes(32))
        return cls(hmac.digest(secret_key.encode(), b"bridge stream token v1", "sha256"))

    def _mac(self, payload: bytes) -> bytes:
        return hmac.digest(self._key, payload, "sha256")

    def issue(self, user_id: str, call_id: str, now: float) -> str:
        for part in (user_id, call_id):
            if not part or " " in part:
                raise ValueError("user and call ids must be non-empty and hold no space")
        payload = " ".join((_VERSION, user_id, call_id, str(int(now + self._ttl_s)),
                            secrets.token_hex(8))).encode()
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def claims(self, token: str, now: float) -> StreamClaims:
        """The token's claims if it is genuine and unexpired (use() also marks it used)."""
        if len(token) > MAX_TOKEN_CHARS:
            raise StreamTokenError("stream token too long")
        encoded, _, mac = token.partition(".")
        try:
            payload, sent_mac = _unb64(encoded), _unb64(mac)
        except (binascii.Error, ValueError):
            raise StreamTokenError("stream token malformed") from None
        if not hmac.compare_digest(sent_mac, self._mac(payload)):
            raise StreamTokenError("stream token not genuine")
        parts = payload.decode("utf-8", "replace").split(" ")
        if len(parts) != 5 or parts[0] != _VERSION or not parts[3].isdigit():
            raise StreamTokenError("stream token malformed")
        _, user_id, call_id, expiry, nonce = parts
        if int(expiry) <= now:
            raise StreamTokenError("stream token expired")
        return StreamClaims(user_id, call_id, float(expiry), nonce)

    def use(self, token: str, user_id: str, now: float) -> StreamClaims:
        """Check the token for a stream on `user_id`'s path and spend it."""
        claims = self.claims(token, now)
        if claims.user_id != user_id:
            raise StreamTokenError("stream token issued for another user")
        self._forget_expired(now)
        if claims.nonce in self._used:
            raise StreamTokenError("stream token already used")
        if len(self._used) >= MAX_REMEMBERED:
            raise StreamTokenError("too many streams opening; try again")
        self._used[claims.nonce] = claims.expires_at
        return claims

    def _forget_expired(self, now: float) -> None:
        while self._used:
            nonce, expiry = next(iter(self._used.items()))
            if expiry > now:
                break
            del self._used[nonce]

    @property
    def remembered(self) -> int:
        return len(self._used)


def token_fingerprint(token: str) -> str:
    """What logs may show of a token: enough to correlate, useless to replay."""
    return hashlib.sha256(token.encode()).hexdigest()[:10]
