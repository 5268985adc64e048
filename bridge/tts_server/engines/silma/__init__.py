"""The real SILMA model (an optional extra): `build_silma_engine` makes it from the settings.

Modules: upstream (imports the model classes and no more), model (local files -> one device),
frontend (what the model is given, by upstream's rules), text (chunking), diacritizer,
prenormalize, voices (reference clips), normalizer (cached grammars), executor (the one
inference thread, batching chunks), engine (the Engine interface). Random-weight model files for
tests and benchmarks are written by tests/random_model.py, which is not shipped. Importing this
package imports no torch: `start()` does.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from bridge.errors import ConfigError
from bridge.settings import TTSServerSettings
from bridge.tts_server.engines.silma.engine import SilmaConfig, SilmaEngine
from bridge.tts_server.engines.silma.model import ModelFiles, SamplingConfig
from bridge.tts_server.engines.silma.upstream import INSTALL_HINT

__all__ = ["INSTALL_HINT", "SilmaConfig", "SilmaEngine", "build_silma_engine"]
NEEDS = ("torch", "yaml", "x_transformers", "torchdiffeq", "silma_tts", "vocos")


def build_silma_engine(settings: TTSServerSettings) -> SilmaEngine:
    """Check the install and the files now; the model loads in `start()`."""
    missing = [name for name in NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(
            f"engine 'silma' needs the [silma] extra: {INSTALL_HINT} "
            f"(missing: {', '.join(missing)})"
        )

    def path(value: str) -> Path | None:
        return Path(value) if value.strip() else None

    files = ModelFiles(
        Path(settings.silma_checkpoint),
        Path(settings.silma_vocab),
        Path(settings.silma_vocoder),
        path(settings.silma_architecture),
    )
    files.check()  # a wrong path fails at startup, not at the first call
    return SilmaEngine(
        SilmaConfig(
            files=files,
            device=settings.silma_device,
            dtype=settings.silma_dtype,
            sampling=SamplingConfig(
                settings.silma_steps, settings.silma_cfg_strength, settings.silma_sway_coef
            ),
            normalizer_cache_dir=path(settings.silma_normalizer_cache_dir),
            voice_cache_size=settings.silma_voice_cache_size,
            max_batch=settings.silma_max_batch,
            default_voice=path(settings.silma_default_voice),
            default_voice_text=settings.silma_default_voice_text,
            chunking="upstream" if settings.silma_chunking == "upstream" else "latency",
            pauses="between" if settings.silma_pauses == "between" else "upstream",
            diacritizer=settings.silma_diacritizer,
            catt_model_dir=path(settings.silma_catt_model_dir),
        )
    )
