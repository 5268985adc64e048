"""Encryption of stored secrets (Fernet) and hashing of access tokens.

Secrets (TTS API keys, provider auth tokens) are stored Fernet-encrypted under BRIDGE_SECRET_KEY.
Access tokens are 32 random bytes, so a single fast SHA-256 is enough to store them: there is no
low-entropy password for a slow hash to protect.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from bridge.errors import ConfigError
from bridge.store.files import PRIVATE_FILE, restrict

DECRYPT_FAILED = "stored secrets cannot be decrypted with BRIDGE_SECRET_KEY"


def generate_key() -> str:
    return Fernet.generate_key().decode("ascii")


def new_token() -> str:
    # Hex keeps tokens alphanumeric, safe in any header, cookie or URL.
    return secrets.token_hex(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class SecretBox:
    """Encrypts and decrypts secret strings. `secret_key` is one Fernet key, or several separated
    by commas to rotate: the first encrypts, any of them decrypts. The empty string stays empty,
    so "not set" needs no key."""

    __slots__ = ("_fernet",)

    def __init__(self, secret_key: str) -> None:
        try:
            keys = [Fernet(key.strip()) for key in secret_key.split(",") if key.strip()]
        except ValueError:
            raise ConfigError(
                "BRIDGE_SECRET_KEY must be Fernet keys (32 url-safe base64-encoded bytes); make one"
                " with: python -c 'from cryptography.fernet import Fernet;"
                " print(Fernet.generate_key().decode())'"
            ) from None
        if not keys:
            raise ConfigError("BRIDGE_SECRET_KEY is empty")
        self._fernet = MultiFernet(keys)

    def __repr__(self) -> str:
        return "SecretBox(<hidden>)"

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii") if plaintext else ""

    def decrypt(self, ciphertext: str) -> str:
        if not ciphertext:
            return ""
        try:
            return self._fernet.decrypt(ciphertext.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError):
            # `from None`: neither the ciphertext nor the key may reach a log through the chain.
            raise ConfigError(DECRYPT_FAILED) from None


def key_from_file(path: Path) -> tuple[str, bool]:
    """The key kept in `path`, created (mode 0600) when missing; an existing file readable by
    others is made private. True when it was just created."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    except FileExistsError:
        try:
            restrict(path)
            return path.read_text(encoding="ascii").strip(), False
        except (OSError, UnicodeError) as exc:
            raise ConfigError(f"cannot read the secret key file {path}: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot create the secret key file {path}: {exc}") from exc
    key = generate_key()
    with os.fdopen(fd, "w", encoding="ascii") as file:
        file.write(key + "\n")
    return key, True
