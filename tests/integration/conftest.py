import pytest

from tests.servers import make_settings, running_tts


@pytest.fixture(scope="module")
async def tts():
    """Our TTS server speaking with Piper on 127.0.0.1, shared by a test module."""
    async with running_tts(make_settings()) as server:
        yield server
