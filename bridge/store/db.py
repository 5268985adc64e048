"""Engine, database URLs and schema migrations: one async code path for SQLite and PostgreSQL.

Migrations are an ordered list of functions on a (sync) SQLAlchemy connection; migration N brings
the schema from version N-1 to N, and `schema_version` holds one row per version applied. They
are frozen history: each declares the tables as they were then, never the current ones below,
and uses only Core / DDL that both databases run. All pending migrations apply in one transaction
(SQLite gets transactional DDL below), under a lock, so replicas starting together migrate once.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.schema import CreateColumn

from bridge.errors import ConfigError
from bridge.store.files import private_directory, private_file

NOW = sa.text("CURRENT_TIMESTAMP")  # the same SQL on both databases
_IMMEDIATE = "bridge_sqlite_immediate"  # execution option: take SQLite's write lock at BEGIN
_MIGRATION_LOCK = 0x51_1A_DB  # PostgreSQL advisory lock key
# Connect arguments a URL may carry (SQLAlchemy adds its statement cache size); others are settings.
_ASYNCPG_ARGS = frozenset(inspect.signature(asyncpg.connect).parameters) | {
    "prepared_statement_cache_size"
}

# The current schema, for queries. Migrations below create it; a test checks they agree.
metadata = sa.MetaData()

schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
)

users = sa.Table(
    "users",
    metadata,
    # Alphanumeric: Plivo passes the id back in extraHeaders, which allow only [A-Za-z0-9].
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("display_name", sa.Text, nullable=False, server_default=""),
    sa.Column("token_hash", sa.Text, nullable=False, unique=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    sa.Column("role", sa.Text, nullable=False, server_default="user"),  # "user" | "operator"
)

silma_credentials = sa.Table(
    "silma_credentials",
    metadata,
    sa.Column("user_id", sa.Text, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("api_endpoint", sa.Text, nullable=False, server_default=""),
    sa.Column("api_key", sa.Text, nullable=False, server_default=""),  # encrypted
    sa.Column("is_local", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    sa.Column("region", sa.Text, nullable=False, server_default="auto"),
    sa.Column("reference_audio", sa.LargeBinary, nullable=True),
    sa.Column("reference_text", sa.Text, nullable=False, server_default=""),
    sa.Column("api", sa.Text, nullable=False, server_default=""),  # "" (the bridge's) | silma | v2
    sa.Column("speed", sa.Float, nullable=True),  # None: the bridge's
    sa.Column("v2_model", sa.Text, nullable=False, server_default=""),
    sa.Column("v2_voice", sa.Text, nullable=False, server_default=""),
    sa.Column("v2_custom_audio_id", sa.Text, nullable=False, server_default=""),
    sa.Column("v2_user_id", sa.Text, nullable=False, server_default=""),
)

telephony_credentials = sa.Table(
    "telephony_credentials",
    metadata,
    sa.Column("user_id", sa.Text, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("twilio_account_sid", sa.Text, nullable=False, server_default=""),
    sa.Column("twilio_auth_token", sa.Text, nullable=False, server_default=""),  # encrypted
    sa.Column("plivo_auth_id", sa.Text, nullable=False, server_default=""),
    sa.Column("plivo_auth_token", sa.Text, nullable=False, server_default=""),  # encrypted
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
)

pronunciation_overrides = sa.Table(
    "pronunciation_overrides",
    metadata,
    sa.Column("user_id", sa.Text, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    # The list's order, from 0: the settings page shows it as the user left it.
    sa.Column("position", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("written", sa.Text, nullable=False),
    sa.Column("spoken", sa.Text, nullable=False),
    sa.Column("match_case", sa.Boolean, nullable=False, server_default=sa.false()),
)


def _v1_users_and_silma(conn: Connection) -> None:
    """Users and their SILMA endpoint and key: the table the specification's SQL updates."""
    md = sa.MetaData()
    sa.Table(
        "users",
        md,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("display_name", sa.Text, nullable=False, server_default=""),
        sa.Column("token_hash", sa.Text, nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    )
    sa.Table(
        "silma_credentials",
        md,
        sa.Column(
            "user_id", sa.Text, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("api_endpoint", sa.Text, nullable=False, server_default=""),
        sa.Column("api_key", sa.Text, nullable=False, server_default=""),
        sa.Column("is_local", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    )
    md.create_all(conn, checkfirst=False)


def _v2_region_and_voice(conn: Connection) -> None:
    """Per-user region choice and reference voice."""
    _add_column(conn, "silma_credentials", sa.Column(
        "region", sa.Text, nullable=False, server_default="auto"))
    _add_column(conn, "silma_credentials", sa.Column("reference_audio", sa.LargeBinary))
    _add_column(conn, "silma_credentials", sa.Column(
        "reference_text", sa.Text, nullable=False, server_default=""))


def _v3_telephony(conn: Connection) -> None:
    """Per-user Twilio and Plivo credentials."""
    md = sa.MetaData()
    sa.Table("users", md, sa.Column("id", sa.Text, primary_key=True))  # target of the foreign key
    sa.Table(
        "telephony_credentials",
        md,
        sa.Column(
            "user_id", sa.Text, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("twilio_account_sid", sa.Text, nullable=False, server_default=""),
        sa.Column("twilio_auth_token", sa.Text, nullable=False, server_default=""),
        sa.Column("plivo_auth_id", sa.Text, nullable=False, server_default=""),
        sa.Column("plivo_auth_token", sa.Text, nullable=False, server_default=""),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    ).create(conn)


def _v4_user_roles(conn: Connection) -> None:
    """Roles. The "default" user is the owner of a single-tenant install: an operator."""
    _add_column(conn, "users", sa.Column("role", sa.Text, nullable=False, server_default="user"))
    frozen = sa.Table(
        "users", sa.MetaData(),
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("role", sa.Text),
    )
    conn.execute(frozen.update().where(frozen.c.id == "default").values(role="operator"))


def _v5_public_api(conn: Connection) -> None:
    """Per-user API (ours or SILMA's public v2), speed, and the v2 model and voice."""
    _add_column(conn, "silma_credentials", sa.Column(
        "api", sa.Text, nullable=False, server_default=""))
    _add_column(conn, "silma_credentials", sa.Column("speed", sa.Float))
    for name in ("v2_model", "v2_voice", "v2_custom_audio_id", "v2_user_id"):
        _add_column(conn, "silma_credentials", sa.Column(
            name, sa.Text, nullable=False, server_default=""))


def _v6_pronunciation_overrides(conn: Connection) -> None:
    """Per-user pronunciation overrides: one row per entry, in the user's order."""
    md = sa.MetaData()
    sa.Table("users", md, sa.Column("id", sa.Text, primary_key=True))  # target of the foreign key
    sa.Table(
        "pronunciation_overrides",
        md,
        sa.Column(
            "user_id", sa.Text, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("position", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("written", sa.Text, nullable=False),
        sa.Column("spoken", sa.Text, nullable=False),
        sa.Column("match_case", sa.Boolean, nullable=False, server_default=sa.false()),
    ).create(conn)


def _add_column(conn: Connection, table: str, column: sa.Column[Any]) -> None:
    sa.Table(table, sa.MetaData(), column)  # CreateColumn renders a column of some table
    spec = CreateColumn(column).compile(dialect=conn.dialect)
    conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {spec}")


MIGRATIONS: tuple[Callable[[Connection], None], ...] = (
    _v1_users_and_silma,
    _v2_region_and_voice,
    _v3_telephony,
    _v4_user_roles,
    _v5_public_api,
    _v6_pronunciation_overrides,
)
LATEST = len(MIGRATIONS)


def immediate(engine: AsyncEngine) -> AsyncEngine:
    """`engine` whose transactions take SQLite's write lock at BEGIN. For a transaction that
    reads before it writes: two such deferred ones would each hold a read lock the other's
    write needs, and one fail at once with "database is locked" instead of waiting its turn."""
    return engine.execution_options(**{_IMMEDIATE: True})


async def migrate(engine: AsyncEngine, target: int = LATEST) -> list[int]:
    """Bring the schema up to version `target`; return the versions applied (none when current)."""
    async with immediate(engine).begin() as conn:
        return await conn.run_sync(_migrate, target)


def _migrate(conn: Connection, target: int) -> list[int]:
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
    schema_version.create(conn, checkfirst=True)
    current = conn.scalar(sa.select(sa.func.max(schema_version.c.version))) or 0
    if current > LATEST:
        raise ConfigError(
            f"the database schema is version {current}, newer than this bridge knows ({LATEST}):"
            " upgrade the bridge"
        )
    applied = []
    for version in range(current + 1, target + 1):
        MIGRATIONS[version - 1](conn)
        conn.execute(schema_version.insert().values(version=version))
        applied.append(version)
    return applied


def async_url(database_url: str) -> URL:
    """The URL with its async driver: sqlite:/// -> sqlite+aiosqlite, postgresql:// -> asyncpg."""
    raw = database_url.strip()
    if raw.startswith("postgres://"):  # the short scheme many hosts hand out; SQLAlchemy refuses it
        raw = "postgresql://" + raw.removeprefix("postgres://")
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError):
        # No value in the message: a malformed URL may still hold a password.
        raise ConfigError(
            "BRIDGE_DATABASE_URL is not a database URL (sqlite:///path or postgresql://...)"
        ) from None
    backend = url.get_backend_name()
    if backend == "sqlite":
        return url.set(drivername="sqlite+aiosqlite")
    if backend == "postgresql":
        return url.set(drivername="postgresql+asyncpg")
    raise ConfigError(f"BRIDGE_DATABASE_URL must be sqlite or postgresql, not {backend!r}")


def sqlite_file(url: URL) -> Path | None:
    """The database file of a SQLite URL; None for PostgreSQL or an in-memory database."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


def create_engine(database_url: str) -> AsyncEngine:
    url = async_url(database_url)
    # hide_parameters: values (encrypted secrets, token hashes) never reach error messages.
    if url.get_backend_name() == "postgresql":
        url, server_settings = _split_server_settings(url)
        return create_async_engine(
            url,
            hide_parameters=True,
            pool_pre_ping=True,
            connect_args={"server_settings": server_settings} if server_settings else {},
        )
    path = sqlite_file(url)
    if path is not None:
        # Before SQLite writes a byte: its journal and WAL files copy the database file's mode.
        private_directory(path.parent)
        private_file(path)
    engine = create_async_engine(url, hide_parameters=True)
    _sqlite_transactions(engine.sync_engine)
    return engine


def _split_server_settings(url: URL) -> tuple[URL, dict[str, str]]:
    """Query parameters asyncpg.connect does not take become server settings, as asyncpg does
    for its own DSNs (`?search_path=bridge`); libpq's `sslmode` becomes asyncpg's `ssl`."""
    query = dict(url.query)
    if "sslmode" in query:
        query.setdefault("ssl", query.pop("sslmode"))
    settings = {key: str(value) for key, value in query.items() if key not in _ASYNCPG_ARGS}
    kept = {key: value for key, value in query.items() if key not in settings}
    return url.set(query=kept), settings


def _sqlite_transactions(engine: sa.Engine) -> None:
    # sqlite3's legacy mode opens no transaction before DDL, so a failing migration would stay
    # half applied. SQLAlchemy's documented remedy: switch that off and emit BEGIN ourselves.
    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # IMMEDIATE takes the write lock up front: two processes starting together migrate in
        # turn instead of one failing to upgrade its read lock.
        immediate = conn.get_execution_options().get(_IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
