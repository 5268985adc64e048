"""The configured speech-to-text backend, one per bridge (or per user's settings).

Checked here, at startup, so a bad setting stops the bridge with its name rather than
failing every call: an unknown backend, a paid service with no key, the offline backend
without its extra installed.
"""

from __future__ import annotations

import aiohttp

from bridge.errors import ConfigError
from bridge.settings import SttSettings
from bridge.stt.base import SpeechToText

BACKENDS = ("none", "pocketsphinx", "openai", "deepgram")


def stt_backend(settings: SttSettings, http: aiohttp.ClientSession) -> SpeechToText | None:
    """The backend `settings.backend` names (None for "none"). `http` carries the paid
    services' requests; it stays the caller's (pass the guarded session for a tenant's URL)."""
    backend = settings.backend
    if backend == "none":
        return None
    if backend == "pocketsphinx":
        try:
            from bridge.stt.pocketsphinx_stt import PocketsphinxStt
        except ImportError as exc:
            raise ConfigError("stt.backend = pocketsphinx needs the stt extra: "
                              f"pip install '.[stt]' ({exc})") from exc
        return PocketsphinxStt()
    if backend == "openai":
        from bridge.stt.openai_stt import OpenAiStt

        # A server of one's own may need no key; OpenAI's own always does.
        if not settings.api_key and not settings.url:
            raise ConfigError("stt.backend = openai with OpenAI's own URL needs stt.api_key")
        return OpenAiStt(settings, http)
    if backend == "deepgram":
        from bridge.stt.deepgram_stt import DeepgramStt

        if not settings.api_key:
            raise ConfigError("stt.backend = deepgram needs stt.api_key")
        try:
            return DeepgramStt(settings, http)
        except ValueError as exc:
            raise ConfigError(f"stt.url: {exc}") from exc
    raise ConfigError(f"unknown stt.backend {backend!r}: choose one of {', '.join(BACKENDS)}")
