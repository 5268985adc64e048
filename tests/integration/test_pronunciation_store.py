"""Pronunciation overrides in the store, on SQLite and PostgreSQL (each PostgreSQL test in its own
schema): the list in its order, per tenant, replaced whole, and the migration that adds it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa

from bridge.store import DEFAULT_USER_ID, PronunciationOverride, Store
from bridge.store.crypto import generate_key
from bridge.store.db import create_engine, migrate

KEY = generate_key()
QATAR = PronunciationOverride("Qatar", "Katar")
SILMA = PronunciationOverride("SILMA", "Silma")
US = PronunciationOverride("US", "you ess", match_case=True)


@pytest.fixture
async def store(db_url) -> AsyncIterator[Store]:
    store = await Store.open(db_url, KEY, default_user_token="owner-token")
    yield store
    await store.close()


async def test_a_list_is_kept_in_its_order_and_replaced_whole(store: Store) -> None:
    assert await store.pronunciation(DEFAULT_USER_ID) == []
    assert await store.replace_pronunciation(DEFAULT_USER_ID, [SILMA, US, QATAR]) == [
        SILMA, US, QATAR]
    assert await store.pronunciation(DEFAULT_USER_ID) == [SILMA, US, QATAR]
    await store.replace_pronunciation(DEFAULT_USER_ID, [QATAR])
    assert await store.pronunciation(DEFAULT_USER_ID) == [QATAR]
    await store.replace_pronunciation(DEFAULT_USER_ID, [])
    assert await store.pronunciation(DEFAULT_USER_ID) == []


async def test_each_tenant_has_its_own_list(store: Store) -> None:
    ann, _ = await store.create_user("Ann")
    bob, _ = await store.create_user("Bob")
    await store.replace_pronunciation(ann.id, [SILMA])
    await store.replace_pronunciation(bob.id, [QATAR, US])
    await store.replace_pronunciation(ann.id, [PronunciationOverride("محمد", "مُحَمَّد")])
    assert await store.pronunciation(ann.id) == [PronunciationOverride("محمد", "مُحَمَّد")]
    assert await store.pronunciation(bob.id) == [QATAR, US]
    assert await store.pronunciation(DEFAULT_USER_ID) == []
    await store.remove_user(bob.id)  # the foreign key's cascade takes the list along
    async with store.engine.connect() as conn:
        left = await conn.scalar(sa.text(
            "SELECT count(*) FROM pronunciation_overrides WHERE user_id = :id"), {"id": bob.id})
    assert left == 0


async def test_an_unknown_user_has_no_list_to_replace(store: Store) -> None:
    with pytest.raises(LookupError, match="nobody"):
        await store.replace_pronunciation("nobody", [SILMA])
    with pytest.raises(LookupError):
        await store.replace_pronunciation("nobody", [])


async def test_saves_of_one_list_at_once_take_turns(store: Store) -> None:
    lists = [[PronunciationOverride(f"word{n}{i}", f"said {n}") for i in range(20)]
             for n in range(6)]
    await asyncio.gather(*(store.replace_pronunciation(DEFAULT_USER_ID, entries)
                           for entries in lists))
    assert await store.pronunciation(DEFAULT_USER_ID) in lists  # one whole list, no mix


async def test_upgrade_to_version_6_keeps_the_users_and_adds_empty_lists(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        assert await migrate(engine, target=5) == [1, 2, 3, 4, 5]
        async with engine.begin() as conn:
            await conn.execute(sa.text(
                "INSERT INTO users (id, display_name, token_hash) VALUES ('old', 'Old', 'h')"))
        assert await migrate(engine) == [6]
    finally:
        await engine.dispose()
    store = await Store.open(db_url, KEY)
    try:
        assert await store.pronunciation("old") == []
        await store.replace_pronunciation("old", [SILMA])
        assert await store.pronunciation("old") == [SILMA]
    finally:
        await store.close()
