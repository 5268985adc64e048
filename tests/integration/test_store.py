"""The credentials store against SQLite and PostgreSQL (each PostgreSQL test in its own schema).

PostgreSQL: BRIDGE_TEST_POSTGRES_URL, default postgresql://postgres@127.0.0.1:5432/test. When it
cannot be reached its tests are skipped, or fail when CI is set: CI must test PostgreSQL.
"""

import asyncio
import os
import pty
import re
import stat
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from bridge.errors import ConfigError
from bridge.store import DEFAULT_USER_ID, Store
from bridge.store.crypto import DECRYPT_FAILED, SecretBox, generate_key, hash_token
from bridge.store.db import LATEST, async_url, create_engine, metadata, migrate
from bridge.store.repository import NO_TOKEN_HINT
from tests.postgres import pg_schema

SPEC_SQL = (
    "UPDATE silma_credentials SET api_endpoint = 'https://x/api', is_local = false"
    " WHERE user_id = 'default'"
)
KEY = generate_key()
ROOT = Path(__file__).resolve().parents[2]
TOKEN = re.compile(r"\b[0-9a-f]{64}\b")




@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    async with pg_schema() as url:
        yield url


@pytest.fixture
def terminal(capsys, monkeypatch) -> None:
    """stderr (captured) claims to be a terminal, where a generated token may be printed. On the
    class: pytest-asyncio runs the test with another capture object than a fixture sees."""
    monkeypatch.setattr(type(sys.stderr), "isatty", lambda _self: True)


@pytest.fixture
async def store(db_url) -> AsyncIterator[Store]:
    store = await Store.open(db_url, KEY, default_user_token="owner-token")
    yield store
    await store.close()


T = TypeVar("T")


def found(value: T | None) -> T:
    """What the store found: the test fails here on None, and the checks see the type narrowed."""
    assert value is not None
    return value


async def _raw(store: Store, sql: str) -> list[tuple]:
    async with store.engine.connect() as conn:
        return [tuple(row) for row in await conn.execute(sa.text(sql))]


async def test_migrations_apply_once_and_build_the_current_schema(store):
    assert await migrate(store.engine) == []
    assert await _raw(store, "SELECT version FROM schema_version ORDER BY version") == [
        (v,) for v in range(1, LATEST + 1)
    ]

    def columns(conn):
        inspector = sa.inspect(conn)
        return {
            table: {(c["name"], c["nullable"]) for c in inspector.get_columns(table)}
            for table in inspector.get_table_names()
        }

    async with store.engine.connect() as conn:
        actual = await conn.run_sync(columns)
    assert actual == {
        table.name: {(c.name, c.nullable) for c in table.columns} for table in metadata.sorted_tables
    }


async def test_replicas_starting_together_migrate_and_seed_once(db_url, capsys, terminal):
    stores = await asyncio.gather(*(Store.open(db_url, KEY) for _ in range(3)))
    try:
        assert await _raw(stores[0], "SELECT count(*) FROM schema_version") == [(LATEST,)]
        assert await _raw(stores[0], "SELECT count(*) FROM users") == [(1,)]
        assert capsys.readouterr().err.count("access token") == 1
    finally:
        for store in stores:
            await store.close()


async def test_upgrade_from_version_1_keeps_the_data(db_url):
    engine = create_engine(db_url)
    try:
        assert await migrate(engine, target=1) == [1]
        async with engine.begin() as conn:
            await conn.execute(
                sa.text("INSERT INTO users (id, display_name, token_hash) VALUES ('old', 'Old', 'h')")
            )
            await conn.execute(
                sa.text("INSERT INTO silma_credentials (user_id, api_endpoint, api_key, is_local)"
                        " VALUES ('old', 'wss://tts.example/ws', :key, true)"),
                {"key": SecretBox(KEY).encrypt("sk-old")},
            )
    finally:
        await engine.dispose()

    store = await Store.open(db_url, KEY)
    try:
        old = found(await store.silma("old"))
        assert (old.api_endpoint, old.api_key, old.is_local) == ("wss://tts.example/ws", "sk-old", True)
        assert (old.region, old.reference_audio, old.reference_text) == ("auto", None, "")
        telephony = await store.update_telephony("old", plivo_auth_id="MA1", plivo_auth_token="pt")
        assert (telephony.plivo_auth_id, telephony.plivo_auth_token) == ("MA1", "pt")
        assert await _raw(store, "SELECT max(version) FROM schema_version") == [(LATEST,)]
    finally:
        await store.close()


async def test_default_user_is_seeded_once_and_its_token_printed_once(db_url, capsys, terminal):
    store = await Store.open(db_url, KEY)
    printed = capsys.readouterr().err
    token = printed.rsplit(" ", 1)[-1].strip()
    assert "access token" in printed and len(token) == 64
    assert found(await store.user_for_token(token)).id == DEFAULT_USER_ID
    silma = found(await store.silma(DEFAULT_USER_ID))
    assert (silma.api_endpoint, silma.is_local, silma.region) == ("", False, "auto")
    await store.close()

    store = await Store.open(db_url, KEY)
    try:
        assert capsys.readouterr().err == ""
        assert found(await store.user_for_token(token)).id == DEFAULT_USER_ID
        assert await _raw(store, "SELECT count(*) FROM users") == [(1,)]
        assert await _raw(store, "SELECT count(*) FROM silma_credentials") == [(1,)]
    finally:
        await store.close()


async def test_token_from_settings_is_used_and_replaces_a_lost_one(db_url, capsys):
    store = await Store.open(db_url, KEY, default_user_token="first")
    assert capsys.readouterr().err == ""
    assert found(await store.user_for_token("first")).id == DEFAULT_USER_ID
    await store.close()

    store = await Store.open(db_url, KEY, default_user_token="second")
    try:
        assert await store.user_for_token("first") is None
        assert found(await store.user_for_token("second")).id == DEFAULT_USER_ID
    finally:
        await store.close()

async def test_off_a_terminal_no_token_is_made_only_a_hint_how_to_make_one(db_url, capsys):
    with capture_logs() as logs:
        store = await Store.open(db_url, KEY)
    try:
        printed = capsys.readouterr()
        assert "access token" not in printed.err and not TOKEN.search(printed.err + printed.out)
        assert [e["hint"] for e in logs if e["event"] == "default_user_has_no_token"] == [
            NO_TOKEN_HINT
        ]
        assert "rotate-token default" in NO_TOKEN_HINT and "BRIDGE_DEFAULT_USER_TOKEN" in NO_TOKEN_HINT
        default = found(await store.get_user(DEFAULT_USER_ID))
        assert default.is_operator
        # Its stored hash is no hash of any token: nothing anyone could send matches it.
        [(stored,)] = await _raw(store, "SELECT token_hash FROM users WHERE id = 'default'")
        assert not re.fullmatch(r"[0-9a-f]{64}", stored)
        token = await store.rotate_token(DEFAULT_USER_ID)
        assert found(await store.user_for_token(token)).id == DEFAULT_USER_ID
    finally:
        await store.close()

    with capture_logs() as logs:  # a token exists now: no more hint
        store = await Store.open(db_url, KEY)
    await store.close()
    assert [e for e in logs if e["event"] == "default_user_has_no_token"] == []


async def test_every_start_without_a_token_repeats_the_hint(db_url):
    for _ in range(2):
        with capture_logs() as logs:
            store = await Store.open(db_url, KEY)
        await store.close()
        assert [e["event"] for e in logs].count("default_user_has_no_token") == 1


async def test_a_real_terminal_gets_the_token_and_it_works(db_url):
    """A child process whose stderr is a pseudo-terminal: sys.stderr.isatty() itself decides."""
    child = (
        "import asyncio, sys\n"
        "from bridge.store import Store\n"
        "async def main():\n"
        "    store = await Store.open(sys.argv[1], sys.argv[2])\n"
        "    await store.close()\n"
        "asyncio.run(main())\n"
    )
    primary, secondary = pty.openpty()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", child, db_url, KEY, cwd=ROOT,
            stdout=asyncio.subprocess.DEVNULL, stderr=secondary,
        )
        os.close(secondary)
        secondary = -1
        assert await proc.wait() == 0
        seen = b""
        while True:
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # EIO: every writer's end is closed and the buffer is drained
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(primary)
        if secondary >= 0:
            os.close(secondary)
    [token] = TOKEN.findall(seen.decode())
    store = await Store.open(db_url, KEY)
    try:
        assert found(await store.user_for_token(token)).id == DEFAULT_USER_ID
    finally:
        await store.close()


async def test_upgrade_to_roles_makes_the_default_user_an_operator(db_url):
    engine = create_engine(db_url)
    try:
        assert await migrate(engine, target=3) == [1, 2, 3]
        async with engine.begin() as conn:
            for user_id in ("default", "old"):
                await conn.execute(
                    sa.text("INSERT INTO users (id, display_name, token_hash) VALUES (:id, '', :h)"),
                    {"id": user_id, "h": hash_token(f"token-{user_id}")},
                )
    finally:
        await engine.dispose()

    store = await Store.open(db_url, KEY)
    try:
        default = found(await store.user_for_token("token-default"))
        old = found(await store.user_for_token("token-old"))
        assert (default.id, default.role, default.is_operator) == (DEFAULT_USER_ID, "operator", True)
        assert (old.id, old.role, old.is_operator) == ("old", "user", False)
    finally:
        await store.close()


async def test_token_auth(store):
    user, token = await store.create_user("Ann")
    assert user.id.isalnum() and user.id.islower()
    assert await store.user_for_token(token) == user
    assert await store.get_user(user.id) == user
    assert await store.user_for_token(token[:-1] + ("0" if token[-1] != "0" else "1")) is None
    assert await store.user_for_token("") is None
    assert await store.get_user("nobody") is None


async def test_users_are_isolated(store):
    ann, _ = await store.create_user("Ann")
    bob, _ = await store.create_user("Bob")
    await store.update_silma(ann.id, api_endpoint="wss://ann/ws", api_key="sk-ann", region="eu-west")
    await store.update_telephony(ann.id, twilio_account_sid="AC1", twilio_auth_token="tw-ann")

    bobs = await store.silma(bob.id)
    assert (bobs.api_endpoint, bobs.api_key, bobs.region) == ("", "", "auto")
    assert await store.telephony(bob.id) is None
    anns = await store.silma(ann.id)
    assert (anns.api_endpoint, anns.api_key, anns.region) == ("wss://ann/ws", "sk-ann", "eu-west")
    assert [c.user_id for c in await store.silma_users()] == sorted([DEFAULT_USER_ID, ann.id, bob.id])


async def test_partial_updates_keep_the_rest(store):
    await store.update_silma(DEFAULT_USER_ID, api_key="sk-1", reference_audio=b"RIFF", reference_text="hi")
    updated = await store.update_silma(DEFAULT_USER_ID, is_local=True)
    assert (updated.api_key, updated.reference_audio, updated.is_local) == ("sk-1", b"RIFF", True)
    cleared = await store.update_silma(DEFAULT_USER_ID, reference_audio=b"")
    assert cleared.reference_audio is None and cleared.reference_text == "hi"


async def test_updating_an_unknown_user_is_a_lookup_error(store):
    with pytest.raises(LookupError, match="nobody"):
        await store.update_silma("nobody", api_key="sk")
    with pytest.raises(LookupError, match="nobody"):
        await store.update_telephony("nobody", twilio_account_sid="AC")

async def test_users_have_roles_and_every_lookup_fills_them(store):
    ann, ann_token = await store.create_user("Ann")
    ops, ops_token = await store.create_user("Ops", role="operator")
    assert (ann.role, ann.is_operator, ops.role, ops.is_operator) == ("user", False, "operator", True)
    assert ann.created_at is not None and ann.created_at.tzinfo is not None
    assert await store.user_for_token(ops_token) == ops == await store.get_user(ops.id)
    assert await store.user_for_token(ann_token) == ann
    listed = await store.list_users()
    assert len(listed) == 3
    assert {u.id: u for u in listed} == {
        DEFAULT_USER_ID: await store.get_user(DEFAULT_USER_ID), ann.id: ann, ops.id: ops
    }
    assert {u.id: u.role for u in listed}[DEFAULT_USER_ID] == "operator"


@pytest.mark.parametrize("name, role, message", [
    ("Ann", "admin", "role must be one of user, operator"),
    ("x" * 101, "user", "at most 100 characters"),
    ("Ann\n", "user", "printable"),
    ("\x1b[31mAnn", "user", "printable"),
])
async def test_create_user_refuses_bad_roles_and_names(store, name, role, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        await store.create_user(name, role=role)
    assert await _raw(store, "SELECT count(*) FROM users") == [(1,)]


async def test_a_name_of_100_printable_characters_is_fine(store):
    user, _ = await store.create_user("é" * 100)
    assert found(await store.get_user(user.id)).display_name == "é" * 100


async def test_rotate_token_replaces_it_at_once(store):
    ann, old = await store.create_user("Ann")
    new = await store.rotate_token(ann.id)
    assert new != old and len(new) == 64
    assert await store.user_for_token(old) is None
    assert await store.user_for_token(new) == ann
    [(stored,)] = await _raw(store, f"SELECT token_hash FROM users WHERE id = '{ann.id}'")
    assert stored == hash_token(new)  # only the hash is kept
    with pytest.raises(LookupError, match="nobody"):
        await store.rotate_token("nobody")


async def test_remove_user_deletes_the_user_and_its_settings(store):
    ann, token = await store.create_user("Ann")
    await store.update_silma(ann.id, api_key="sk-ann")
    await store.update_telephony(ann.id, twilio_account_sid="AC1")
    await store.remove_user(ann.id)
    assert await store.get_user(ann.id) is None and await store.user_for_token(token) is None
    assert await store.silma(ann.id) is None and await store.telephony(ann.id) is None
    with pytest.raises(LookupError, match=ann.id):
        await store.remove_user(ann.id)


async def test_the_default_user_cannot_be_removed(store):
    with pytest.raises(ValueError, match="webhooks and media streams"):
        await store.remove_user(DEFAULT_USER_ID)
    assert found(await store.get_user(DEFAULT_USER_ID)).is_operator


async def test_secrets_are_encrypted_at_rest(store):
    await store.update_silma(DEFAULT_USER_ID, api_key="sk-plain-silma")
    await store.update_telephony(
        DEFAULT_USER_ID, twilio_auth_token="tw-plain-token", plivo_auth_token="pl-plain-token"
    )
    raw = await _raw(store, "SELECT api_key FROM silma_credentials") + await _raw(
        store, "SELECT twilio_auth_token, plivo_auth_token FROM telephony_credentials"
    )
    stored = " ".join(value for row in raw for value in row if value)
    assert stored and "plain" not in stored
    telephony = await store.telephony(DEFAULT_USER_ID)
    assert (telephony.twilio_auth_token, telephony.plivo_auth_token) == (
        "tw-plain-token", "pl-plain-token"
    )
    assert found(await store.silma(DEFAULT_USER_ID)).api_key == "sk-plain-silma"


async def test_specification_sql_takes_effect_on_the_next_read(store):
    await store.update_silma(DEFAULT_USER_ID, is_local=True)
    async with store.engine.begin() as conn:
        await conn.execute(sa.text(SPEC_SQL))
    silma = await store.silma(DEFAULT_USER_ID)
    assert (silma.api_endpoint, silma.is_local) == ("https://x/api", False)


async def test_wrong_secret_key_is_a_config_error(db_url):
    store = await Store.open(db_url, KEY)
    other = await Store.open(db_url, generate_key())  # opens: nothing is encrypted yet
    try:
        await store.update_silma(DEFAULT_USER_ID, api_key="sk-secret")
        ciphertext = (await _raw(store, "SELECT api_key FROM silma_credentials"))[0][0]
        with pytest.raises(ConfigError) as on_read:
            await other.silma(DEFAULT_USER_ID)
        with pytest.raises(ConfigError) as on_open:
            await Store.open(db_url, generate_key())
    finally:
        await store.close()
        await other.close()
    for caught in (on_read, on_open):
        assert str(caught.value) == DECRYPT_FAILED
        assert ciphertext not in str(caught.value) and "sk-secret" not in str(caught.value)


async def test_reprs_and_public_views_hide_secrets(store):
    silma = await store.update_silma(
        DEFAULT_USER_ID, api_key="sk-0123456789abcdef", reference_audio=b"RIFF-secret-voice"
    )
    telephony = await store.update_telephony(
        DEFAULT_USER_ID, twilio_auth_token="tw-0123456789abcdef", plivo_auth_token="pl-secret"
    )
    for shown in (repr(silma), str(silma.public()), repr(telephony), str(telephony.public())):
        assert "0123456789" not in shown and "secret" not in shown
    assert silma.public()["api_key"] == "****cdef"
    assert silma.public()["reference_audio_bytes"] == len(b"RIFF-secret-voice")
    assert telephony.public()["plivo_auth_token"] == "****"


async def test_sqlite_without_a_key_keeps_one_next_to_the_database(tmp_path):
    url = f"sqlite:///{tmp_path / 'db' / 'bridge.db'}"
    store = await Store.open(url, "")
    await store.update_silma(DEFAULT_USER_ID, api_key="sk-dev")
    await store.close()
    key_file = tmp_path / "db" / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    store = await Store.open(url, "")
    try:
        assert found(await store.silma(DEFAULT_USER_ID)).api_key == "sk-dev"
    finally:
        await store.close()

@pytest.fixture
def umask_022() -> Iterator[None]:
    """The common umask, under which files are created world-readable unless we say otherwise."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_sqlite_data_directory_and_files_are_private(tmp_path, umask_022):
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    url = f"sqlite:///{home / 'data' / 'bridge.db'}"
    store = await Store.open(url, "")
    await store.update_silma(DEFAULT_USER_ID, api_key="sk-dev")
    await store.close()
    assert _mode(home / "data") == 0o700
    assert _mode(home / "data" / "bridge.db") == 0o600
    assert _mode(home / "data" / "secret.key") == 0o600
    assert _mode(home) == 0o755  # an existing directory is not ours to change


async def test_existing_readable_database_and_key_are_made_private(tmp_path, umask_022):
    url = f"sqlite:///{tmp_path / 'bridge.db'}"
    store = await Store.open(url, "")
    await store.close()
    for name in ("bridge.db", "secret.key"):
        (tmp_path / name).chmod(0o644)  # as an older bridge left them

    store = await Store.open(url, "")
    await store.close()
    assert (_mode(tmp_path / "bridge.db"), _mode(tmp_path / "secret.key")) == (0o600, 0o600)


async def test_postgresql_requires_a_secret_key(pg_url):
    with pytest.raises(ConfigError, match="BRIDGE_SECRET_KEY is required"):
        await Store.open(pg_url, "")


@pytest.mark.parametrize("given, driver", [
    ("sqlite:///data/bridge.db", "sqlite+aiosqlite"),
    ("sqlite+aiosqlite:///data/bridge.db", "sqlite+aiosqlite"),
    ("postgresql://u:pw@db/bridge", "postgresql+asyncpg"),
    ("postgres://u:pw@db/bridge", "postgresql+asyncpg"),
    ("postgresql+psycopg2://u:pw@db/bridge", "postgresql+asyncpg"),
])
def test_database_urls_map_to_async_drivers(given, driver):
    assert async_url(given).drivername == driver


@pytest.mark.parametrize("given", ["mysql://u:pw@db/x", "not a url:pw@"])
def test_unsupported_database_urls_are_config_errors_without_passwords(given):
    with pytest.raises(ConfigError, match="BRIDGE_DATABASE_URL") as caught:
        async_url(given)
    assert "pw" not in str(caught.value)


async def test_unreachable_database_is_a_config_error_without_the_password():
    with pytest.raises(ConfigError, match="cannot open the database") as caught:
        await Store.open("postgresql://bridge:pw-secret@127.0.0.1:1/bridge", KEY)
    assert "pw-secret" not in str(caught.value)
