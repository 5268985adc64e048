from collections.abc import AsyncIterator

import pytest

from tests.postgres import pg_schema
from tests.servers import make_settings, running_tts


@pytest.fixture(scope="module")
async def tts():
    """Our TTS server speaking with Piper on 127.0.0.1, shared by a test module."""
    async with running_tts(make_settings()) as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
async def db_url(request, tmp_path) -> AsyncIterator[str]:
    """The store's database, once as a SQLite file and once as a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bridge.db'}"
    else:
        async with pg_schema() as url:
            yield url
