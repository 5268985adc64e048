"""The real SILMA model: an optional extra. Until its engine lands, selecting it fails clearly."""

from __future__ import annotations

import importlib.util

from bridge.errors import ConfigError
from bridge.tts_server.engines.base import Engine

INSTALL_HINT = "pip install 'silma-bridge[silma]' (the silma-tts package)"


def load_silma_engine() -> Engine:
    if importlib.util.find_spec("silma_tts") is None:
        raise ConfigError(f"engine 'silma' needs the [silma] extra: {INSTALL_HINT}")
    raise ConfigError("engine 'silma' is not implemented yet in this version; use piper or sim")
