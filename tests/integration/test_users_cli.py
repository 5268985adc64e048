"""`python -m bridge users ...` as a real subprocess against SQLite and PostgreSQL; what it prints
is checked against the store itself (a token must really log in)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bridge.store import DEFAULT_USER_ID, Store
from tests.integration.test_store import KEY, found, pg_schema

ROOT = Path(__file__).resolve().parents[2]


@dataclasses.dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    def json(self) -> dict[str, Any]:
        assert self.code == 0, self.err
        value = json.loads(self.out)  # the whole of stdout: exactly one JSON document
        assert isinstance(value, dict)
        return value


async def users(database_url: str, *args: str, **env: str) -> Result:
    """Run `python -m bridge users ARGS` with only the given BRIDGE_* settings."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    environ.update(BRIDGE_DATABASE_URL=database_url, BRIDGE_SECRET_KEY=KEY, **env)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "users", *args, cwd=ROOT, env=environ,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


@pytest.fixture(params=["sqlite", "postgresql"])
async def db_url(request, tmp_path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'data' / 'bridge.db'}"
    else:
        async with pg_schema() as url:
            yield url


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'data' / 'bridge.db'}"


async def _open(database_url: str) -> Store:
    return await Store.open(database_url, KEY, show_default_token=False)


async def test_add_list_rotate_remove(db_url):
    added = (await users(db_url, "add", "Ann", "--json")).json()
    operator = (await users(db_url, "add", "Ops", "--operator", "--json")).json()
    assert (added["role"], operator["role"]) == ("user", "operator")

    store = await _open(db_url)
    try:
        ann = found(await store.user_for_token(str(added["token"])))
        assert (ann.id, ann.display_name, ann.role) == (added["user_id"], "Ann", "user")
        ops = found(await store.user_for_token(str(operator["token"])))
        assert ops.id == operator["user_id"] and ops.is_operator

        listed = (await users(db_url, "list", "--json")).json()["users"]
        assert {(u["user_id"], u["display_name"], u["role"]) for u in listed} == {
            (DEFAULT_USER_ID, "Default user", "operator"),
            (ann.id, "Ann", "user"),
            (ops.id, "Ops", "operator"),
        }
        assert all(u["created_at"] for u in listed)

        rotated = (await users(db_url, "rotate-token", ann.id, "--json")).json()
        assert rotated["user_id"] == ann.id and rotated["token"] != added["token"]
        assert await store.user_for_token(str(added["token"])) is None
        assert found(await store.user_for_token(str(rotated["token"]))).id == ann.id

        removed = await users(db_url, "remove", ann.id)
        assert removed.code == 0 and ann.id in removed.out
        assert await store.get_user(ann.id) is None
        assert await store.user_for_token(str(rotated["token"])) is None
        assert await store.silma(ann.id) is None
        assert found(await store.get_user(ops.id)).is_operator  # the others stay
    finally:
        await store.close()


async def test_text_output_and_tokens_only_on_stdout(sqlite_url):
    added = await users(sqlite_url, "add", "Bob")
    assert added.code == 0, added.err
    fields = dict(line.split(": ", 1) for line in added.out.splitlines())
    assert fields["name"] == "Bob" and fields["role"] == "user"
    rotated = await users(sqlite_url, "rotate-token", fields["user_id"])
    assert rotated.code == 0, rotated.err
    new_token = rotated.out.strip()  # alone on stdout: TOKEN=$(... rotate-token ID)
    assert rotated.out == new_token + "\n"
    for result in (added, rotated):  # stderr is where logs go: no token there
        assert fields["token"] not in result.err and new_token not in result.err

    listed = await users(sqlite_url, "list")
    header, *rows = listed.out.splitlines()
    assert header.split() == ["ID", "NAME", "ROLE", "CREATED"]
    assert {row.split()[0] for row in rows} == {DEFAULT_USER_ID, fields["user_id"]}

    store = await _open(sqlite_url)
    try:
        assert await store.user_for_token(fields["token"]) is None
        assert found(await store.user_for_token(new_token)).display_name == "Bob"
    finally:
        await store.close()


async def test_rotating_the_default_users_token_makes_it_usable(sqlite_url):
    """A fresh install off a terminal has no default token; this is how an operator gets one."""
    token = (await users(sqlite_url, "rotate-token", DEFAULT_USER_ID, "--json")).json()["token"]
    store = await _open(sqlite_url)
    try:
        default = found(await store.user_for_token(str(token)))
        assert default.id == DEFAULT_USER_ID and default.is_operator
    finally:
        await store.close()


async def test_rotating_the_default_token_warns_when_the_setting_would_restore_it(sqlite_url):
    result = await users(sqlite_url, "rotate-token", DEFAULT_USER_ID,
                         BRIDGE_DEFAULT_USER_TOKEN="from-settings")
    assert result.code == 0 and "BRIDGE_DEFAULT_USER_TOKEN is set" in result.err


@pytest.mark.parametrize("args, message", [
    (("rotate-token", "nobody"), "error: no user 'nobody'"),
    (("remove", "nobody"), "error: no user 'nobody'"),
    (("remove", DEFAULT_USER_ID), "webhooks and media streams"),
    (("add", "Ann", "--role", "admin"), "error: role must be one of user, operator"),
    (("add", "x" * 101), "at most 100 characters"),
])
async def test_refusals_exit_2_with_the_reason_on_stderr(sqlite_url, args, message):
    result = await users(sqlite_url, *args)
    assert (result.code, result.out) == (2, "")
    assert message in result.err and "Traceback" not in result.err


async def test_refusals_change_nothing(sqlite_url):
    await users(sqlite_url, "remove", DEFAULT_USER_ID)
    await users(sqlite_url, "add", "Ann", "--role", "admin")
    listed = (await users(sqlite_url, "list", "--json")).json()["users"]
    assert [u["user_id"] for u in listed] == [DEFAULT_USER_ID]


async def test_unreachable_database_exits_2_without_the_password():
    result = await users("postgresql://bridge:pw-secret@127.0.0.1:1/bridge", "list")
    assert (result.code, result.out) == (2, "")
    assert "error: cannot open the database" in result.err
    assert "pw-secret" not in result.err and "Traceback" not in result.err
