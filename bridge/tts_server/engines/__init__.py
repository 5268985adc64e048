"""TTS engines behind one interface (base.Engine); `get_engine` picks one from the settings."""

from __future__ import annotations

from pathlib import Path

from bridge.errors import ConfigError
from bridge.settings import TTSServerSettings
from bridge.tts_server.engines.base import Engine, Utterance

__all__ = ["Engine", "Utterance", "get_engine"]


def get_engine(settings: TTSServerSettings) -> Engine:
    """Build (not load) the configured engine; `Engine.start` loads it."""
    if settings.engine == "piper":
        from bridge.tts_server.engines.piper import PiperEngine

        return PiperEngine(settings.piper_voice, workers=settings.concurrency)
    if settings.engine == "sim":
        from bridge.tts_server.engines.sim import SimEngine

        return SimEngine(
            Path(settings.sim_cache_dir),
            first_audio_s=settings.sim_first_audio_s,
            rtf=settings.sim_rtf,
            piper_voice=settings.piper_voice,
            sample_rate=settings.sim_sample_rate,
        )
    if settings.engine == "silma":
        from bridge.tts_server.engines.silma import build_silma_engine

        return build_silma_engine(settings)
    raise ConfigError(f"unknown TTS engine {settings.engine!r}: expected piper, sim or silma")
