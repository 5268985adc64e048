"""Per-user credentials and settings (SQLite or PostgreSQL, secrets encrypted at rest)."""

from bridge.store.models import (
    PronunciationOverride,
    SilmaCredentials,
    TelephonyCredentials,
    User,
)
from bridge.store.repository import DEFAULT_USER_ID, Store

__all__ = ["DEFAULT_USER_ID", "PronunciationOverride", "SilmaCredentials", "Store",
           "TelephonyCredentials", "User"]
