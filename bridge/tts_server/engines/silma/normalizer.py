"""Text normalization ("$5" -> "five dollars") with NeMo's grammars, compiled once per install.

Building NeMo's English and Arabic grammars takes minutes of CPU; NeMo can write the compiled
grammars (FAR files) to a cache folder and read them back. `cached_build` gives that folder a
key (library versions, language, case mode), builds into a private folder and publishes it
with one rename, so a restart (or a second server starting at the same time) never rebuilds
and never reads a half-written cache. nemo-text-processing is optional (the [silma-text]
extra): without it text is spoken as written, and the server says so once at start.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import structlog

from bridge.tts_server.engines.silma.prenormalize import prenormalize

log = structlog.get_logger("bridge.tts_server")

T = TypeVar("T")
DONE = "complete"  # written last: a folder without it is an interrupted build
_ARABIC = re.compile(r"[\u0600-\u06FF]")


def cached_build(cache_root: Path, key: str, build: Callable[[Path], T]) -> tuple[T, bool]:
    """`build(folder)` loads what it finds in `folder` and writes what it had to make there.

    Returns the built object and whether the cache was used (True) or filled (False).
    """
    ready = cache_root / key
    if (ready / DONE).is_file():
        return build(ready), True
    cache_root.mkdir(parents=True, exist_ok=True)
    scratch = cache_root / f".{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    scratch.mkdir()
    try:
        built = build(scratch)
        (scratch / DONE).write_text(key, encoding="utf-8")
        try:
            scratch.rename(ready)
        except OSError:  # another process published first (or a stale folder): keep theirs
            if not (ready / DONE).is_file():
                shutil.rmtree(ready, ignore_errors=True)
                scratch.rename(ready)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return built, False


def language_of(text: str) -> str:
    return "ar" if _ARABIC.search(text) else "en"


class TextNormalizer:
    """English and Arabic NeMo normalizers, or the identity when NeMo is not installed."""

    def __init__(self, cache_dir: Path | None) -> None:
        self.cache_dir = cache_dir  # None: normalization is off
        self._normalizers: dict[str, Any] = {}

    @property
    def active(self) -> bool:
        return bool(self._normalizers)

    def load(self) -> None:
        """Blocking; minutes on a cold cache, about a second from a warm one."""
        if self.cache_dir is None:
            log.info("silma_normalizer_off", reason="silma_normalizer_cache_dir is empty")
            return
        try:
            from nemo_text_processing.text_normalization.normalize import Normalizer
        except ImportError:
            log.warning(
                "silma_normalizer_unavailable",
                reason="nemo-text-processing is not installed: text is spoken as written",
                install="pip install -e '.[silma-text]'",
            )
            return
        versions = "-".join(
            f"{name}{importlib.metadata.version(name)}"
            for name in ("nemo-text-processing", "pynini")
        )
        for lang in ("en", "ar"):
            def build(folder: Path, lang: str = lang) -> Any:
                return Normalizer(input_case="cased", lang=lang, cache_dir=str(folder))

            key = f"{versions}-{lang}-cased"
            self._normalizers[lang], cached = cached_build(self.cache_dir, key, build)
            log.info(
                "silma_normalizer_ready", lang=lang, cached=cached, folder=str(self.cache_dir / key)
            )

    def __call__(self, text: str, language: str) -> str:
        """`language` is decided by the caller on the whole reply (upstream's rule).

        The pre-normalizer reads times, dates, phone numbers and ordinals first. It reads every
        other Arabic number too: NeMo 1.1.0's Arabic grammar stops at 9999, takes "1,234" for
        a decimal and knows no Arabic-Indic digits (scripts/results/text_normalization.txt).
        English cardinals, money and percentages it leaves to NeMo when NeMo is installed.
        """
        nemo_reads_cardinals = language == "en" and language in self._normalizers
        return self.nemo(prenormalize(text, language, cardinals=not nemo_reads_cardinals),
                         language)

    def nemo(self, text: str, language: str) -> str:
        """NeMo alone, as silma-tts 1.0.5 normalizes; the text unchanged without NeMo."""
        normalizer = self._normalizers.get(language)
        if normalizer is None:
            return text
        result: str = normalizer.normalize(
            text, verbose=False, punct_pre_process=True, punct_post_process=True
        )
        return result
