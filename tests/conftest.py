"""Shared fixtures: one loaded Piper engine for the whole session (loading it takes ~1 s), and
the sim engine's speech rendered once with it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.tts_server.engines.piper import PiperEngine
from bridge.tts_server.engines.sim import SimEngine


@pytest.fixture(scope="session")
def piper_engine() -> Iterator[PiperEngine]:
    engine = PiperEngine(workers=2)
    engine.load()
    yield engine
    engine.shutdown()


@pytest.fixture(scope="session")
def sim_cache(tmp_path_factory: pytest.TempPathFactory, piper_engine: PiperEngine) -> Path:
    """The sim engine's speech, rendered once with the shared Piper engine."""
    cache = tmp_path_factory.mktemp("sim-cache")
    asyncio.run(SimEngine(cache, first_audio_s=0, rtf=0, piper=piper_engine).start())
    return cache
