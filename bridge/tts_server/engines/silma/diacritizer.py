"""Arabic diacritization (tashkeel) for the silma engine, from local models only.

silma-tts 1.0.5 diacritizes undiacritized Arabic with CATT (`catt_tashkeel.CATTEncoderOnly`),
whose package downloads its ONNX files on first use; nothing may be downloaded here. Kinds:
- "text2tashkeel" (the default): PyPI text2tashkeel, whose wheel holds its int8 ONNX models
  (numpy + onnxruntime, no network); its default model, rawi-ensemble, is its most accurate
  (2.04% diacritic error rate by its own benchmark) and takes a few ms a sentence on a CPU;
- "catt": upstream's own model, from a folder the operator fills with CATT's encoder.onnx and
  decoder.onnx (release v2, eo_model_onnx.zip); given both paths, catt_tashkeel loads them and
  downloads nothing;
- "off": Arabic is read as written (and, as upstream with force_tashkeel off, not sped up).
The engine calls a diacritizer from its one text thread, a span of Arabic words at a time.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bridge.errors import ConfigError

Diacritizer = Callable[[str], str]  # an Arabic span in, the same letters with harakat out
KINDS = ("text2tashkeel", "catt", "off")
# A span longer than this is diacritized in word-aligned pieces: both models were trained on
# sentence-sized inputs and their cost grows with the input.
MAX_SPAN_CHARS = 400


def load_diacritizer(kind: str, model_dir: Path | None) -> Diacritizer | None:
    """Blocking: load the model now, so a missing file fails at start, not at a call."""
    if kind == "off":
        return None
    if kind == "text2tashkeel":
        if importlib.util.find_spec("text2tashkeel") is None:
            raise ConfigError("silma_diacritizer text2tashkeel needs: pip install text2tashkeel")
        from text2tashkeel import Diacritizer as Text2Tashkeel

        model: Any = Text2Tashkeel()
        model.diacritize("بسم")  # builds its session now
        return _bounded(model.diacritize)
    if kind == "catt":
        return _bounded(_catt(model_dir))
    raise ConfigError(f"silma_diacritizer {kind!r}: expected one of {', '.join(KINDS)}")


def _catt(model_dir: Path | None) -> Diacritizer:
    if model_dir is None:
        raise ConfigError("silma_diacritizer catt needs silma_catt_model_dir")
    encoder, decoder = model_dir / "encoder.onnx", model_dir / "decoder.onnx"
    for path in (encoder, decoder):
        if not path.is_file():
            raise ConfigError(f"CATT model file {path} does not exist (files are never fetched)")
    if importlib.util.find_spec("catt_tashkeel") is None:
        # --no-deps: its declared onnxruntime-gpu would displace onnxruntime
        raise ConfigError(
            "silma_diacritizer catt needs: pip install tqdm && "
            "pip install --no-deps catt-tashkeel==1.0.2"
        )
    from catt_tashkeel import CATTEncoderOnly

    try:
        model: Any = CATTEncoderOnly(encoder_path=str(encoder), decoder_path=str(decoder))
        model.do_tashkeel("بسم", verbose=False)  # files of the wrong shape fail now, not at a call
    except Exception as exc:  # onnxruntime's errors have no common base class but Exception
        raise ConfigError(f"CATT model files in {model_dir} do not load: {exc}") from exc

    def diacritize(span: str) -> str:
        result: str = model.do_tashkeel(span, verbose=False)
        return result

    return diacritize


def _bounded(diacritize: Callable[[str], Any]) -> Diacritizer:
    def call(span: str) -> str:
        pieces: list[str] = []
        rest = span
        while len(rest) > MAX_SPAN_CHARS:
            cut = rest.rfind(" ", 0, MAX_SPAN_CHARS)
            if cut <= 0:  # one word this long is no Arabic word: left as written
                return span
            pieces.append(f"{diacritize(rest[:cut])} ")
            rest = rest[cut + 1 :]
        pieces.append(str(diacritize(rest)) if rest.strip() else rest)
        return "".join(pieces)

    return call
