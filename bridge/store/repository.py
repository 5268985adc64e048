"""The per-user credentials store.

Every call is its own short transaction that reads the database afresh, so a change made by hand
(the specification's `UPDATE silma_credentials ...`) takes effect on the next read, no restart.
Validating credentials is the web layer's job; the store stores. Users are the exception: the
command line and the web both create them, so their role and name are checked here, once.
"""

from __future__ import annotations

import secrets
import string
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge.errors import ConfigError
from bridge.store.crypto import SecretBox, generate_key, hash_token, key_from_file, new_token
from bridge.store.db import (
    create_engine,
    immediate,
    migrate,
    pronunciation_overrides,
    silma_credentials,
    sqlite_file,
    telephony_credentials,
    users,
)
from bridge.store.models import (
    OPERATOR,
    ROLES,
    USER,
    PronunciationOverride,
    SilmaCredentials,
    TelephonyCredentials,
    User,
)

log = structlog.get_logger("bridge.store")

DEFAULT_USER_ID = "default"
MAX_DISPLAY_NAME = 100
# The token hash of a user whose token nobody knows: hash_token() gives 64 hex digits, never this
# prefix, so no token matches it, and the random rest keeps the column unique.
_NO_TOKEN = "none:"
NO_TOKEN_HINT = (
    "the default user has no usable access token: run `python -m bridge users rotate-token"
    " default` (prints one) or set BRIDGE_DEFAULT_USER_TOKEN"
)
_USER_COLUMNS = (users.c.id, users.c.display_name, users.c.role, users.c.created_at)
_ID_ALPHABET = string.ascii_lowercase + string.digits
_SECRET_COLUMNS = (
    silma_credentials.c.api_key,
    telephony_credentials.c.twilio_auth_token,
    telephony_credentials.c.plivo_auth_token,
)


class Store:
    """Users and their SILMA and telephony credentials; secrets encrypted at rest."""

    def __init__(self, engine: AsyncEngine, box: SecretBox) -> None:
        self._engine = engine
        self._box = box

    @classmethod
    async def open(
        cls,
        database_url: str,
        secret_key: str,
        *,
        default_user_token: str = "",
        show_default_token: bool | None = None,
    ) -> Store:
        """Connect, migrate the schema and make sure the default user exists.

        A default user created without `default_user_token` gets a token printed to stderr only
        when `show_default_token` (None: when stderr is a terminal); else one nobody knows, and
        a hint (no secret) how to make one."""
        engine = create_engine(database_url)
        try:
            store = cls(engine, SecretBox(_secret_key(engine, secret_key)))
            await migrate(engine)
            await store._check_key()
            if show_default_token is None:
                show_default_token = sys.stderr.isatty()
            await store._seed_default_user(default_user_token, show_default_token)
        except (OSError, DBAPIError) as exc:
            await engine.dispose()
            reason = exc.orig if isinstance(exc, DBAPIError) else exc
            where = engine.url.render_as_string(hide_password=True)
            raise ConfigError(f"cannot open the database {where}: {reason}") from exc
        except BaseException:
            await engine.dispose()
            raise
        return store

    async def close(self) -> None:
        await self._engine.dispose()

    @property
    def engine(self) -> AsyncEngine:
        """For plain SQL (maintenance, health checks) through the same connection pool."""
        return self._engine

    async def user_for_token(self, token: str) -> User | None:
        if not token:
            return None
        # Looked up by hash: the index compare can only leak timing about the hash, which an
        # attacker cannot steer without a preimage, so no constant-time scan of users is needed.
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(*_USER_COLUMNS).where(users.c.token_hash == hash_token(token))
                )
            ).one_or_none()
        return None if row is None else _user(row)

    async def create_user(self, display_name: str, role: str = USER) -> tuple[User, str]:
        """A new user with default SILMA settings. The plaintext token is returned only here.
        Raises ValueError for a role other than "user" or "operator", or a display name that is
        longer than 100 characters or not printable (it is shown in pages and tables)."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        if len(display_name) > MAX_DISPLAY_NAME or not display_name.isprintable():
            raise ValueError(
                f"a display name must be printable and at most {MAX_DISPLAY_NAME} characters"
            )
        user_id, token = _new_user_id(), new_token()
        async with self._engine.begin() as conn:
            await conn.execute(
                users.insert().values(
                    id=user_id, display_name=display_name, role=role, token_hash=hash_token(token)
                )
            )
            await conn.execute(silma_credentials.insert().values(user_id=user_id))
            # Read back for created_at, which the database sets.
            row = (await conn.execute(sa.select(*_USER_COLUMNS).where(users.c.id == user_id))).one()
        return _user(row), token

    async def get_user(self, user_id: str) -> User | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(sa.select(*_USER_COLUMNS).where(users.c.id == user_id))
            ).one_or_none()
        return None if row is None else _user(row)

    async def list_users(self) -> list[User]:
        """Every user, oldest first."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                sa.select(*_USER_COLUMNS).order_by(users.c.created_at, users.c.id)
            )
            return [_user(row) for row in rows]

    async def rotate_token(self, user_id: str) -> str:
        """A new token for the user, returned only here; the old one stops working at once (every
        lookup reads the database). Raises LookupError for an unknown user."""
        token = new_token()
        async with self._engine.begin() as conn:
            changed = await conn.execute(
                users.update().where(users.c.id == user_id).values(token_hash=hash_token(token))
            )
        if not changed.rowcount:
            raise LookupError(f"no user {user_id!r}")
        log.info("user_token_rotated", user_id=user_id)
        return token

    async def remove_user(self, user_id: str) -> None:
        """Delete the user and, by the foreign keys' cascade, all their settings. Raises
        LookupError for an unknown user, ValueError for the default user."""
        if user_id == DEFAULT_USER_ID:
            raise ValueError(
                f"the {DEFAULT_USER_ID!r} user cannot be removed: the bridge's webhooks and media"
                " streams without a user id in their path belong to it (rotate its token instead)"
            )
        async with self._engine.begin() as conn:
            deleted = await conn.execute(users.delete().where(users.c.id == user_id))
        if not deleted.rowcount:
            raise LookupError(f"no user {user_id!r}")
        log.info("user_removed", user_id=user_id)

    async def silma(self, user_id: str) -> SilmaCredentials | None:
        row = await self._row(silma_credentials, user_id)
        return None if row is None else self._silma(row)

    async def update_silma(
        self,
        user_id: str,
        *,
        api_endpoint: str | None = None,
        api_key: str | None = None,
        is_local: bool | None = None,
        region: str | None = None,
        reference_audio: bytes | None = None,
        reference_text: str | None = None,
        api: str | None = None,
        speed: float | None = None,
        clear_speed: bool = False,
        v2_model: str | None = None,
        v2_voice: str | None = None,
        v2_custom_audio_id: str | None = None,
        v2_user_id: str | None = None,
    ) -> SilmaCredentials:
        """Change the fields given (None = keep); b"" clears the reference audio, `clear_speed`
        the speed (back to the bridge's). Raises LookupError for an unknown user."""
        values = _given(
            api_endpoint=api_endpoint, is_local=is_local, region=region,
            reference_text=reference_text, api=api, speed=speed, v2_model=v2_model,
            v2_voice=v2_voice, v2_custom_audio_id=v2_custom_audio_id, v2_user_id=v2_user_id,
        )
        if clear_speed:
            values["speed"] = None
        if api_key is not None:
            values["api_key"] = self._box.encrypt(api_key)
        if reference_audio is not None:
            values["reference_audio"] = reference_audio or None
        return self._silma(await self._upsert(silma_credentials, user_id, values))

    async def telephony(self, user_id: str) -> TelephonyCredentials | None:
        row = await self._row(telephony_credentials, user_id)
        return None if row is None else self._telephony(row)

    async def update_telephony(
        self,
        user_id: str,
        *,
        twilio_account_sid: str | None = None,
        twilio_auth_token: str | None = None,
        plivo_auth_id: str | None = None,
        plivo_auth_token: str | None = None,
    ) -> TelephonyCredentials:
        """Change the fields given (None = keep). Raises LookupError for an unknown user."""
        values = _given(twilio_account_sid=twilio_account_sid, plivo_auth_id=plivo_auth_id)
        for name, secret in (
            ("twilio_auth_token", twilio_auth_token), ("plivo_auth_token", plivo_auth_token)
        ):
            if secret is not None:
                values[name] = self._box.encrypt(secret)
        return self._telephony(await self._upsert(telephony_credentials, user_id, values))

    async def pronunciation(self, user_id: str) -> list[PronunciationOverride]:
        """The user's pronunciation overrides in their order; [] for none (or no such user)."""
        table = pronunciation_overrides
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                sa.select(table.c.written, table.c.spoken, table.c.match_case)
                .where(table.c.user_id == user_id).order_by(table.c.position))
            return [PronunciationOverride(row.written, row.spoken, bool(row.match_case))
                    for row in rows]

    async def replace_pronunciation(self, user_id: str,
                                    overrides: Sequence[PronunciationOverride]
                                    ) -> list[PronunciationOverride]:
        """The user's whole list replaced by `overrides`, in one transaction (a call starting
        meanwhile reads the old list or the new one, never half of each). Raises LookupError
        for an unknown user."""
        table = pronunciation_overrides
        async with immediate(self._engine).begin() as conn:
            # Two saves of one user's list take turns, instead of the second failing on the
            # first's new rows: FOR UPDATE on PostgreSQL, SQLite's write lock from BEGIN.
            user = sa.select(users.c.id).where(users.c.id == user_id).with_for_update()
            if await conn.scalar(user) is None:
                raise LookupError(f"no user {user_id!r}")
            await conn.execute(table.delete().where(table.c.user_id == user_id))
            if overrides:
                await conn.execute(table.insert(), [
                    {"user_id": user_id, "position": position, "written": entry.written,
                     "spoken": entry.spoken, "match_case": entry.match_case}
                    for position, entry in enumerate(overrides)])
        return list(overrides)

    async def silma_users(self) -> list[SilmaCredentials]:
        """Every user's SILMA settings, e.g. to know which TTS pools are still needed."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                sa.select(silma_credentials).order_by(silma_credentials.c.user_id)
            )
            return [self._silma(row) for row in rows]

    async def _row(self, table: sa.Table, user_id: str) -> sa.Row[Any] | None:
        async with self._engine.connect() as conn:
            result = await conn.execute(sa.select(table).where(table.c.user_id == user_id))
            return result.one_or_none()

    async def _upsert(self, table: sa.Table, user_id: str, values: dict[str, Any]) -> sa.Row[Any]:
        statement = (
            self._insert(table)
            .values(user_id=user_id, **values)
            .on_conflict_do_update(
                index_elements=[table.c.user_id], set_={**values, "updated_at": sa.func.now()}
            )
        )
        try:
            async with self._engine.begin() as conn:
                await conn.execute(statement)
                result = await conn.execute(sa.select(table).where(table.c.user_id == user_id))
                return result.one()
        except IntegrityError as exc:  # the foreign key: no such user
            raise LookupError(f"no user {user_id!r}") from exc

    def _silma(self, row: sa.Row[Any]) -> SilmaCredentials:
        return SilmaCredentials(
            user_id=row.user_id,
            api_endpoint=row.api_endpoint,
            api_key=self._box.decrypt(row.api_key),
            is_local=bool(row.is_local),
            region=row.region,
            reference_audio=row.reference_audio,
            reference_text=row.reference_text,
            updated_at=_utc(row.updated_at),
            api=row.api,
            speed=row.speed,
            v2_model=row.v2_model,
            v2_voice=row.v2_voice,
            v2_custom_audio_id=row.v2_custom_audio_id,
            v2_user_id=row.v2_user_id,
        )

    def _telephony(self, row: sa.Row[Any]) -> TelephonyCredentials:
        return TelephonyCredentials(
            user_id=row.user_id,
            twilio_account_sid=row.twilio_account_sid,
            twilio_auth_token=self._box.decrypt(row.twilio_auth_token),
            plivo_auth_id=row.plivo_auth_id,
            plivo_auth_token=self._box.decrypt(row.plivo_auth_token),
            updated_at=_utc(row.updated_at),
        )

    async def _check_key(self) -> None:
        """Fail at start, not on some later call, when the key cannot read what is stored."""
        async with self._engine.connect() as conn:
            for column in _SECRET_COLUMNS:
                sample = await conn.scalar(sa.select(column).where(column != "").limit(1))
                if sample:
                    self._box.decrypt(sample)

    async def _seed_default_user(self, token: str, show_token: bool) -> None:
        """Create the "default" user (an operator) and its SILMA row once, so the specification's
        SQL has a row to change. A token from the environment is authoritative: setting it
        replaces a lost one. Without one, a generated token is shown only on a terminal: stderr
        that is not one is a container's log, kept and shipped, and the token must not be in it.
        There the user gets a token nobody knows, and each start says how to make one."""
        chosen = token or new_token()
        shown = not token and show_token
        token_hash = hash_token(chosen) if token or shown else _NO_TOKEN + secrets.token_hex(16)
        async with self._engine.begin() as conn:
            # ON CONFLICT DO NOTHING: replicas starting together create it once, no error.
            created = await conn.execute(
                self._insert(users)
                .values(
                    id=DEFAULT_USER_ID, display_name="Default user", role=OPERATOR,
                    token_hash=token_hash,
                )
                .on_conflict_do_nothing(index_elements=[users.c.id])
            )
            await conn.execute(
                self._insert(silma_credentials)
                .values(user_id=DEFAULT_USER_ID)
                .on_conflict_do_nothing(index_elements=[silma_credentials.c.user_id])
            )
            if not created.rowcount and token:
                replaced = await conn.execute(
                    users.update()
                    .where(users.c.id == DEFAULT_USER_ID, users.c.token_hash != hash_token(token))
                    .values(token_hash=hash_token(token))
                )
                if replaced.rowcount:
                    log.info("default_user_token_replaced", source="BRIDGE_DEFAULT_USER_TOKEN")
            unusable = not token and bool(
                await conn.scalar(
                    sa.select(users.c.id).where(
                        users.c.id == DEFAULT_USER_ID, users.c.token_hash.startswith(_NO_TOKEN)
                    )
                )
            )
        if created.rowcount and shown:
            # Deliberately not logged, and only on a terminal: a person reads it, no log keeps it.
            print(
                f"Created user {DEFAULT_USER_ID!r}. Its access token, shown only this once: "
                f"{chosen}",
                file=sys.stderr,
            )
        elif unusable:
            log.warning("default_user_has_no_token", hint=NO_TOKEN_HINT)

    def _insert(self, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
        # ON CONFLICT reads the same in both dialects but lives in each one's insert().
        if self._engine.dialect.name == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)


def _secret_key(engine: AsyncEngine, configured: str) -> str:
    if configured:
        return configured
    if engine.dialect.name == "postgresql":
        raise ConfigError(
            "BRIDGE_SECRET_KEY is required with PostgreSQL (a Fernet key; make one with: python"
            " -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')"
        )
    path = sqlite_file(engine.url)
    if path is None:  # in memory: the secrets die with the process, and so may the key
        return generate_key()
    # Development convenience: a key kept next to the database keeps secrets readable across
    # restarts. Anyone who can read both files can read the secrets, hence the warning.
    key_path = path.parent / "secret.key"
    key, created = key_from_file(key_path)
    log.warning(
        "secret_key_from_file", path=str(key_path), created=created,
        hint="set BRIDGE_SECRET_KEY in production",
    )
    return key


def _given(**fields: Any) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if value is not None}


def _user(row: sa.Row[*tuple[Any, ...]]) -> User:
    return User(
        id=row.id, display_name=row.display_name, role=row.role, created_at=_utc(row.created_at)
    )


def _new_user_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(12))


def _utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything the store writes is UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
