"""Records the store hands out: frozen, secrets decrypted but kept out of repr and public()."""

from __future__ import annotations

import dataclasses
from datetime import datetime


def mask_secret(secret: str) -> str:
    """Empty when unset; else asterisks, plus the last 4 characters of a long enough secret, so an
    owner can tell which key is set without it being recoverable."""
    if not secret:
        return ""
    return "****" + secret[-4:] if len(secret) >= 16 else "****"


USER = "user"
OPERATOR = "operator"  # manages the bridge itself; the "default" user of a fresh install is one
ROLES = (USER, OPERATOR)


@dataclasses.dataclass(frozen=True)
class User:
    id: str
    display_name: str
    role: str = USER
    # Filled by every Store method; None only for a record built by hand.
    created_at: datetime | None = None

    @property
    def is_operator(self) -> bool:
        return self.role == OPERATOR


@dataclasses.dataclass(frozen=True)
class SilmaCredentials:
    user_id: str
    api_endpoint: str
    api_key: str = dataclasses.field(repr=False)
    is_local: bool
    # "auto" (the fastest configured region) or a region id.
    region: str
    # WAV bytes of the voice to clone; None = the server's default voice.
    reference_audio: bytes | None = dataclasses.field(repr=False)
    reference_text: str
    updated_at: datetime
    # "" = the bridge's API; "silma" = our protocol; "v2" = SILMA's public API, in this voice.
    api: str = ""
    speed: float | None = None  # None: the bridge's
    v2_model: str = ""  # "" = the bridge's, for these four
    v2_voice: str = ""
    v2_custom_audio_id: str = ""
    v2_user_id: str = ""

    def public(self) -> dict[str, object]:
        """What a settings page or API may show."""
        return {
            "user_id": self.user_id,
            "api_endpoint": self.api_endpoint,
            "api_key": mask_secret(self.api_key),
            "is_local": self.is_local,
            "region": self.region,
            "reference_audio_bytes": len(self.reference_audio or b""),
            "reference_text": self.reference_text,
            "api": self.api,
            "speed": self.speed,
            "v2_model": self.v2_model,
            "v2_voice": self.v2_voice,
            "v2_custom_audio_id": self.v2_custom_audio_id,
            "v2_user_id": self.v2_user_id,
            "updated_at": self.updated_at.isoformat(),
        }


@dataclasses.dataclass(frozen=True)
class TelephonyCredentials:
    user_id: str
    twilio_account_sid: str
    twilio_auth_token: str = dataclasses.field(repr=False)
    plivo_auth_id: str
    plivo_auth_token: str = dataclasses.field(repr=False)
    updated_at: datetime

    def public(self) -> dict[str, object]:
        return {
            "user_id": self.user_id,
            "twilio_account_sid": self.twilio_account_sid,
            "twilio_auth_token": mask_secret(self.twilio_auth_token),
            "plivo_auth_id": self.plivo_auth_id,
            "plivo_auth_token": mask_secret(self.plivo_auth_token),
            "updated_at": self.updated_at.isoformat(),
        }


@dataclasses.dataclass(frozen=True, slots=True)
class PronunciationOverride:
    """One entry of a user's pronunciation list: `written` in the agent's text is said as
    `spoken` (bridge/call/lexicon.py has the bounds, checks and matching rules)."""

    written: str
    spoken: str
    match_case: bool = False  # False: "silma" and "SILMA" both match

    def public(self) -> dict[str, object]:
        return {"written": self.written, "spoken": self.spoken, "match_case": self.match_case}
