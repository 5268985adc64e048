"""Shared fixtures: one loaded Piper engine for the whole session (loading it takes ~1 s)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bridge.tts_server.engines.piper import PiperEngine


@pytest.fixture(scope="session")
def piper_engine() -> Iterator[PiperEngine]:
    engine = PiperEngine(workers=2)
    engine.load()
    yield engine
    engine.shutdown()
