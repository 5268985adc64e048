"""silma-tts 1.0.5's own inference code (api.py, infer/utils_infer.py), runnable offline here.

Those modules import at load time what they use only to download (huggingface_hub,
cached_path), transcribe (transformers), plot (matplotlib), report progress (tqdm), configure
(hydra, omegaconf), normalize (nemo), diacritize (catt_tashkeel) or read and write files
(torchaudio, soundfile). While they load, those names are stubs; afterwards the stubs leave
`sys.modules` again. What the fidelity tests run is upstream's code itself, with these things
put in its hands:
- `torchaudio.load`, which reads back the 16-bit WAV upstream wrote, is the standard `wave`
  module (same samples: int16 / 32768);
- the model object records what each pass is given and runs the real `CFM.sample`, after
  turning the raw reference audio into the engine's log-mel (upstream's MelSpec needs
  torchaudio; the two agree within 3.2e-5). Each pass gets the noise seed the engine gives the
  same chunk: upstream's own threads draw from the one global generator in an order nobody
  controls, so its multi-chunk noise cannot be reproduced otherwise;
- its diacritizer and normalizer are the engine's (upstream downloads CATT's files at run
  time, and NeMo is an optional extra here).
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
import threading
import types
import wave
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from bridge.tts_server.engines.silma.upstream import load_upstream

STUBBED = (
    "torchaudio", "matplotlib", "matplotlib.pylab", "tqdm", "transformers", "huggingface_hub",
    "nemo_text_processing", "nemo_text_processing.text_normalization",
    "nemo_text_processing.text_normalization.normalize", "catt_tashkeel", "soundfile",
    "cached_path", "hydra", "hydra.utils", "omegaconf",
)


def _unused(name: str) -> Callable[..., NoReturn]:
    def call(*args: Any, **kwargs: Any) -> NoReturn:
        raise RuntimeError(f"{name} is not available to upstream's code in the tests")

    return call


def read_wav(path: str) -> tuple[Any, int]:
    """torchaudio.load for the 16-bit mono WAV files pydub writes: (1, samples) float32, rate."""
    torch = load_upstream().torch
    with wave.open(path, "rb") as wav:
        if wav.getsampwidth() != 2 or wav.getnchannels() != 1:
            raise ValueError(f"{path}: expected 16-bit mono")
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
        rate = wav.getframerate()
    return torch.from_numpy(pcm.astype(np.float32) / 32768.0)[None], rate


def write_wav(path: Path, pcm: np.ndarray, rate: int) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(np.asarray(pcm, dtype="<i2").tobytes())


def _stubs() -> dict[str, types.ModuleType]:
    modules = {name: types.ModuleType(name) for name in STUBBED}
    torchaudio = modules["torchaudio"]
    torchaudio.load = read_wav  # type: ignore[attr-defined]
    torchaudio.transforms = types.SimpleNamespace(  # type: ignore[attr-defined]
        Resample=_unused("torchaudio.transforms.Resample"))
    modules["matplotlib"].use = lambda backend: None  # type: ignore[attr-defined]
    modules["matplotlib"].pylab = modules["matplotlib.pylab"]  # type: ignore[attr-defined]
    modules["transformers"].pipeline = _unused("transformers.pipeline")  # type: ignore[attr-defined]
    modules["huggingface_hub"].hf_hub_download = _unused("hf_hub_download")  # type: ignore[attr-defined]
    normalize = modules["nemo_text_processing.text_normalization.normalize"]
    normalize.Normalizer = _unused("Normalizer")  # type: ignore[attr-defined]
    modules["catt_tashkeel"].CATTEncoderOnly = _unused("CATTEncoderOnly")  # type: ignore[attr-defined]
    modules["cached_path"].cached_path = _unused("cached_path")  # type: ignore[attr-defined]
    modules["hydra.utils"].get_class = _unused("get_class")  # type: ignore[attr-defined]
    modules["omegaconf"].OmegaConf = types.SimpleNamespace(load=_unused("OmegaConf.load"))  # type: ignore[attr-defined]
    return modules


@contextmanager
def _stubbed() -> Iterator[None]:
    saved = {name: sys.modules[name] for name in STUBBED if name in sys.modules}
    sys.modules.update(_stubs())
    try:
        yield
    finally:
        for name in STUBBED:
            sys.modules.pop(name, None)
        sys.modules.update(saved)


@dataclasses.dataclass(frozen=True)
class Upstream:
    infer: types.ModuleType  # silma_tts.infer.utils_infer
    api: types.ModuleType  # silma_tts.api


_lock = threading.Lock()
_loaded: list[Upstream] = []


def upstream_infer() -> Upstream:
    with _lock:
        if not _loaded:
            load_upstream()  # the model classes and vocos, as the engine imports them
            with _stubbed():
                infer = importlib.import_module("silma_tts.infer.utils_infer")
                api = importlib.import_module("silma_tts.api")
            _loaded.append(Upstream(infer, api))
        return _loaded[0]


@dataclasses.dataclass(frozen=True)
class Pass:
    prompt: str
    duration: int
    reference: np.ndarray  # the log-mel the pass was given


class RecordingModel:
    """Upstream's model object: records each pass and runs the real CFM.sample on it."""

    def __init__(self, cfm: Any, mel_frames: Callable[[np.ndarray], Any],
                 seeds: Mapping[str, int]) -> None:
        self._cfm = cfm
        self._mel = mel_frames
        self._seeds = seeds  # by the chunk's text (the prompt after the transcript)
        self._lock = threading.Lock()  # upstream's threads would race on the DiT's text cache
        self.passes: list[Pass] = []

    def sample(self, cond: Any, text: list[str], duration: int, **kwargs: Any) -> Any:
        with self._lock:
            mel = self._mel(cond[0].cpu().numpy())
            self.passes.append(Pass(text[0], duration, mel[0].float().cpu().numpy()))
            chunk = max((c for c in self._seeds if text[0].endswith(c)), key=len)
            seed = self._seeds[chunk]
            return self._cfm.sample(cond=mel, text=text, duration=duration, seed=seed, **kwargs)


class Vocoder:
    """Upstream's `vocoder.decode`: the vocos backbone and head the engine loaded."""

    def __init__(self, backbone: Any, head: Any) -> None:
        self._backbone = backbone
        self._head = head

    def decode(self, mel: Any) -> Any:
        return self._head(self._backbone(mel))


def silma_tts(upstream: Upstream, model: RecordingModel, vocoder: Vocoder) -> Any:
    """A `SilmaTTS` holding the given model and vocoder: its real `infer` runs, nothing loads."""
    tts = object.__new__(upstream.api.SilmaTTS)
    tts.ema_model = model
    tts.vocoder = vocoder
    tts.mel_spec_type = "vocos"
    tts.target_sample_rate = 24000
    tts.device = "cpu"
    return tts
