"""The credentials store against SQLite and PostgreSQL (each PostgreSQL test in its own schema).

PostgreSQL: BRIDGE_TEST_POSTGRES_URL, default postgresql://postgres@127.0.0.1:5432/test. When it
cannot be reached its tests are skipped, or fail when CI is set: CI must test PostgreSQL.
"""

import asyncio
import os
import stat
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pytest
import sqlalchemy as sa

from bridge.errors import ConfigError
from bridge.store import DEFAULT_USER_ID, Store
from bridge.store.crypto import DECRYPT_FAILED, SecretBox, generate_key
from bridge.store.db import LATEST, async_url, create_engine, metadata, migrate

PG_URL = os.environ.get("BRIDGE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
SPEC_SQL = (
    "UPDATE silma_credentials SET api_endpoint = 'https://x/api', is_local = false"
    " WHERE user_id = 'default'"
)
KEY = generate_key()
_pg_unreachable: list[str] = []  # remembered so a dead server costs one connect timeout


@asynccontextmanager
async def _pg_schema() -> AsyncIterator[str]:
    """A URL whose connections see only a fresh schema, dropped afterwards."""
    url = async_url(PG_URL)
    if not _pg_unreachable:
        try:
            admin = await asyncpg.connect(
                url.set(drivername="postgresql").render_as_string(hide_password=False), timeout=5
            )
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            _pg_unreachable.append(f"{type(exc).__name__}: {exc}")
    if _pg_unreachable:
        where = url.render_as_string(hide_password=True)
        message = f"PostgreSQL at {where} unreachable ({_pg_unreachable[0]})"
        if os.environ.get("CI"):
            pytest.fail(f"{message}: CI must test PostgreSQL (set BRIDGE_TEST_POSTGRES_URL)")
        pytest.skip(message)
    schema = f"test_store_{uuid.uuid4().hex[:12]}"
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield url.update_query_dict({"search_path": schema}).render_as_string(hide_password=False)
    finally:
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def db_url(request, tmp_path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bridge.db'}"
    else:
        async with _pg_schema() as url:
            yield url


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    async with _pg_schema() as url:
        yield url


@pytest.fixture
async def store(db_url) -> AsyncIterator[Store]:
    store = await Store.open(db_url, KEY, default_user_token="owner-token")
    yield store
    await store.close()


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


async def test_replicas_starting_together_migrate_and_seed_once(db_url, capsys):
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
        old = await store.silma("old")
        assert (old.api_endpoint, old.api_key, old.is_local) == ("wss://tts.example/ws", "sk-old", True)
        assert (old.region, old.reference_audio, old.reference_text) == ("auto", None, "")
        telephony = await store.update_telephony("old", plivo_auth_id="MA1", plivo_auth_token="pt")
        assert (telephony.plivo_auth_id, telephony.plivo_auth_token) == ("MA1", "pt")
        assert await _raw(store, "SELECT max(version) FROM schema_version") == [(LATEST,)]
    finally:
        await store.close()


async def test_default_user_is_seeded_once_and_its_token_printed_once(db_url, capsys):
    store = await Store.open(db_url, KEY)
    printed = capsys.readouterr().err
    token = printed.rsplit(" ", 1)[-1].strip()
    assert "access token" in printed and len(token) == 64
    assert (await store.user_for_token(token)).id == DEFAULT_USER_ID
    silma = await store.silma(DEFAULT_USER_ID)
    assert (silma.api_endpoint, silma.is_local, silma.region) == ("", False, "auto")
    await store.close()

    store = await Store.open(db_url, KEY)
    try:
        assert capsys.readouterr().err == ""
        assert (await store.user_for_token(token)).id == DEFAULT_USER_ID
        assert await _raw(store, "SELECT count(*) FROM users") == [(1,)]
        assert await _raw(store, "SELECT count(*) FROM silma_credentials") == [(1,)]
    finally:
        await store.close()


async def test_token_from_settings_is_used_and_replaces_a_lost_one(db_url, capsys):
    store = await Store.open(db_url, KEY, default_user_token="first")
    assert capsys.readouterr().err == ""
    assert (await store.user_for_token("first")).id == DEFAULT_USER_ID
    await store.close()

    store = await Store.open(db_url, KEY, default_user_token="second")
    try:
        assert await store.user_for_token("first") is None
        assert (await store.user_for_token("second")).id == DEFAULT_USER_ID
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
    assert (await store.silma(DEFAULT_USER_ID)).api_key == "sk-plain-silma"


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
        assert (await store.silma(DEFAULT_USER_ID)).api_key == "sk-dev"
    finally:
        await store.close()


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
