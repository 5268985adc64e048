"""A fresh PostgreSQL schema per test, on the server every development and CI machine runs
(BRIDGE_TEST_POSTGRES_URL, default postgresql://postgres@127.0.0.1:5432/test). When it cannot
be reached the test is skipped, except under CI, where it fails: CI must test PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pytest

from bridge.store.db import async_url

PG_URL = os.environ.get("BRIDGE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
_pg_unreachable: list[str] = []  # remembered so a dead server costs one connect timeout


@asynccontextmanager
async def pg_schema() -> AsyncIterator[str]:
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
