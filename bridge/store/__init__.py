"""Per-user credentials (SQLite or PostgreSQL, secrets encrypted at rest)."""

from bridge.store.models import SilmaCredentials, TelephonyCredentials, User
from bridge.store.repository import DEFAULT_USER_ID, Store

__all__ = ["DEFAULT_USER_ID", "SilmaCredentials", "Store", "TelephonyCredentials", "User"]
