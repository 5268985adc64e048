import hashlib
import stat

import pytest
from cryptography.fernet import Fernet

from bridge.errors import ConfigError
from bridge.store.crypto import (
    DECRYPT_FAILED,
    SecretBox,
    generate_key,
    hash_token,
    key_from_file,
    new_token,
)
from bridge.store.models import mask_secret


def test_round_trip_and_ciphertext_hides_plaintext():
    box = SecretBox(generate_key())
    ciphertext = box.encrypt("sk-live-secret")
    assert "sk-live-secret" not in ciphertext
    assert box.decrypt(ciphertext) == "sk-live-secret"
    assert box.encrypt("sk-live-secret") != ciphertext  # random IV: equal secrets look different


def test_empty_secret_stays_empty():
    box = SecretBox(generate_key())
    assert box.encrypt("") == ""
    assert box.decrypt("") == ""


def test_wrong_key_is_a_config_error_without_the_ciphertext():
    ciphertext = SecretBox(generate_key()).encrypt("sk-live-secret")
    with pytest.raises(ConfigError) as caught:
        SecretBox(generate_key()).decrypt(ciphertext)
    assert str(caught.value) == DECRYPT_FAILED
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert ciphertext not in str(caught.value)


def test_plaintext_in_the_column_is_a_config_error():
    with pytest.raises(ConfigError, match="cannot be decrypted"):
        SecretBox(generate_key()).decrypt("sk-stored-by-hand-é")


def test_rotation_new_key_first_old_still_decrypts():
    old, new = generate_key(), generate_key()
    written_before = SecretBox(old).encrypt("secret")
    rotated = SecretBox(f"{new}, {old}")
    assert rotated.decrypt(written_before) == "secret"
    assert SecretBox(new).decrypt(rotated.encrypt("secret")) == "secret"


@pytest.mark.parametrize("key", ["not-a-fernet-key", " , "])
def test_bad_key_is_a_config_error_that_does_not_echo_it(key):
    with pytest.raises(ConfigError, match="BRIDGE_SECRET_KEY") as caught:
        SecretBox(key)
    if key.strip(", "):
        assert key not in str(caught.value)


def test_repr_hides_the_key():
    key = generate_key()
    assert key not in repr(SecretBox(key))


def test_tokens_are_long_alphanumeric_and_hashed_with_sha256():
    token = new_token()
    assert len(token) == 64 and token.isalnum() and token != new_token()
    assert hash_token(token) == hashlib.sha256(token.encode()).hexdigest()


def test_key_file_is_private_and_stable(tmp_path):
    path = tmp_path / "secret.key"
    key, created = key_from_file(path)
    assert created and stat.S_IMODE(path.stat().st_mode) == 0o600
    Fernet(key)  # a valid key
    assert key_from_file(path) == (key, False)


def test_key_file_readable_by_others_is_made_private(tmp_path):
    path = tmp_path / "secret.key"
    key = generate_key()
    path.write_text(key + "\n", encoding="ascii")
    path.chmod(0o644)  # as an older bridge, or a copy by hand, left it
    assert key_from_file(path) == (key, False)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_key_file_stricter_than_private_stays_so(tmp_path):
    path = tmp_path / "secret.key"
    path.write_text(generate_key(), encoding="ascii")
    path.chmod(0o400)
    key_from_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o400


@pytest.mark.parametrize("secret, shown", [
    ("", ""),
    ("short", "****"),
    ("sk-0123456789abcdef", "****cdef"),
])
def test_mask_secret(secret, shown):
    assert mask_secret(secret) == shown
