"""The SILMA model on one device: loaded from local files only, one chunk of speech at a time.

Files (the layout of the released model and of the vocos-mel-24khz vocoder):
- checkpoint: model.pt ({"model_state_dict"} or {"ema_model_state_dict"}) or .safetensors
- vocab: vocab.txt, one symbol a line, line number = token id, " " first
- vocoder: a folder with config.yaml (vocos class paths and sizes) and pytorch_model.bin
- architecture: a YAML with model.backbone/arch/mel_spec; by default silma-tts's config.yaml

Not thread-safe: upstream's DiT keeps the text embedding of the call in progress on the
instance (the F5-TTS race that upstream later fixed with thread-local state). Only the
inference executor's single thread calls `generate`, so calls never overlap.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bridge.errors import ConfigError
from bridge.tts_server.engines.silma.upstream import Upstream, load_upstream

if TYPE_CHECKING:
    from torch import Tensor

SHORT_TEXT_CHARS = 25  # silma-tts 1.0.5: texts this short are spoken 1.3x slower, else rushed
SHORT_TEXT_SLOWDOWN = 1.3
MEL_FLOOR = 1e-5  # silma-tts's vocos-type mel: log(clamp(mel, 1e-5))
MAX_FRAMES = 4096  # CFM.sample's cap on a pass's length (reference + speech)


@dataclasses.dataclass(frozen=True)
class ModelFiles:
    checkpoint: Path
    vocab: Path
    vocoder: Path
    architecture: Path | None = None  # None: the architecture silma-tts ships

    def check(self) -> None:
        for what, path in (("checkpoint", self.checkpoint), ("vocab", self.vocab)):
            if not path.is_file():
                raise ConfigError(f"SILMA {what} {path} does not exist (files are never fetched)")
        for name in ("config.yaml", "pytorch_model.bin"):
            if not (self.vocoder / name).is_file():
                raise ConfigError(f"SILMA vocoder folder {self.vocoder} lacks {name}")
        if self.architecture is not None and not self.architecture.is_file():
            raise ConfigError(f"SILMA architecture file {self.architecture} does not exist")


@dataclasses.dataclass(frozen=True)
class MelConfig:
    sample_rate: int = 24000
    n_mels: int = 100
    hop_length: int = 256
    win_length: int = 1024
    n_fft: int = 1024


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    steps: int = 16  # NFE: silma-tts's default
    cfg_strength: float = 2.0
    sway_coef: float = -1.0


def pick_device(torch: Any, device: str, dtype: str) -> tuple[Any, Any]:
    """'auto' = CUDA when present; half precision there (the vocoder stays in float32)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"silma_device {device!r} is not a torch device: {exc}") from exc
    if dtype == "auto":
        dtype = "float16" if dev.type == "cuda" else "float32"
    if dtype not in ("float16", "bfloat16", "float32"):
        raise ConfigError(f"silma_dtype {dtype!r}: expected auto, float16, bfloat16 or float32")
    return dev, getattr(torch, dtype)


def mel_filterbank(config: MelConfig) -> np.ndarray:
    """Triangular filters on the HTK mel scale, unnormalized: (n_mels, n_fft // 2 + 1).

    The filterbank of torchaudio's MelSpectrogram with its defaults (f_min 0, f_max = rate // 2,
    norm None, mel_scale "htk"), which the model and vocoder were trained on.
    """
    freqs = np.linspace(0.0, config.sample_rate // 2, config.n_fft // 2 + 1)
    top = 2595.0 * math.log10(1.0 + (config.sample_rate // 2) / 700.0)
    edges = 700.0 * (10.0 ** (np.linspace(0.0, top, config.n_mels + 2) / 2595.0) - 1.0)
    widths = np.diff(edges)
    slopes = edges[None, :] - freqs[:, None]
    rising = -slopes[:, :-2] / widths[:-1]
    falling = slopes[:, 2:] / widths[1:]
    return np.maximum(0.0, np.minimum(rising, falling)).T.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class SpeechItem:
    """One text to speak in one voice."""

    reference: Any  # (1, frames, n_mels) log-mel of the reference clip, on the model's device
    reference_text: str
    reference_speech_s: float  # the clip's speech, without its padded silence
    text: str
    speed: float = 1.0


class SilmaModel:
    def __init__(
        self,
        upstream: Upstream,
        cfm: Any,
        vocoder: tuple[Any, Any],
        mel: MelConfig,
        device: Any,
        dtype: Any,
        sampling: SamplingConfig,
    ) -> None:
        torch = upstream.torch
        self._torch = torch
        self._cfm = cfm
        self._backbone, self._head = vocoder
        self.mel = mel
        self.device = device
        self.dtype = dtype
        self.sampling = sampling
        self._window = torch.hann_window(mel.win_length, device=device)
        self._filters = torch.from_numpy(mel_filterbank(mel)).to(device)

    @property
    def sample_rate(self) -> int:
        return self.mel.sample_rate

    def mel_frames(self, audio: np.ndarray) -> Tensor:
        """Log-mel of a float32 clip at the model rate: (1, frames, n_mels) in the model dtype."""
        torch = self._torch
        wave = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)).to(self.device)
        with torch.inference_mode():
            spec = torch.stft(
                wave[None],
                self.mel.n_fft,
                hop_length=self.mel.hop_length,
                win_length=self.mel.win_length,
                window=self._window,
                center=True,
                pad_mode="reflect",
                return_complex=True,
            ).abs()
            mel = torch.matmul(self._filters, spec).clamp(min=MEL_FLOOR).log()
        frames: Tensor = mel.permute(0, 2, 1).to(self.dtype)  # self._torch is typed Any
        return frames

    def generate(self, items: Sequence[SpeechItem], *, seed: int) -> list[np.ndarray]:
        """Speech for each item in its reference's voice, in one pass of the model: float32 at
        the model rate, unscaled.

        Duration follows the reference's speaking rate (frames per character), as silma-tts
        does, but counted over the speech only: its padded tail of silence would otherwise slow
        every reply by as much as it is long. The model reads the transcript, then the text.
        Each item starts from the noise `seed` gives a pass of its own length, so an item
        sounds the same in a batch as alone (up to rounding: padding changes the kernels).
        """
        torch = self._torch
        references = [int(item.reference.shape[1]) for item in items]
        prompts = [_join(item.reference_text, item.text) for item in items]
        # What CFM.sample itself makes of a duration: room for the prompt, capped.
        durations = [
            min(MAX_FRAMES, max(len(prompt) + 1, ref + 1, ref + self._speech_frames(item)))
            for item, prompt, ref in zip(items, prompts, references, strict=True)
        ]
        with torch.inference_mode():
            self._cfm.transformer.clear_cache()  # a failed call may have left its text behind
            out, _ = self._cfm.sample(
                cond=torch.nn.utils.rnn.pad_sequence(
                    [item.reference[0] for item in items], batch_first=True),
                text=prompts,
                duration=torch.tensor(durations, device=self.device),
                lens=torch.tensor(references, device=self.device),
                steps=self.sampling.steps,
                cfg_strength=self.sampling.cfg_strength,
                sway_sampling_coef=self.sampling.sway_coef,
                seed=seed,
            )
            waves = []
            for row, (ref, end) in enumerate(zip(references, durations, strict=True)):
                generated = out[row : row + 1, ref:end, :].float().permute(0, 2, 1)
                wave = self._head(self._backbone(generated))
                waves.append(wave[0].cpu().numpy().astype(np.float32, copy=False))
        return waves

    def _speech_frames(self, item: SpeechItem) -> int:
        speed = item.speed
        if len(item.text) < SHORT_TEXT_CHARS:
            speed /= SHORT_TEXT_SLOWDOWN
        speech_frames = item.reference_speech_s * self.mel.sample_rate / self.mel.hop_length
        frames_per_char = speech_frames / max(1, len(item.reference_text))
        return max(1, int(frames_per_char * len(item.text) / speed))


def _join(reference_text: str, text: str) -> str:
    """silma-tts ends the transcript with '. ' so the new text starts a sentence of its own."""
    reference_text = reference_text.strip()
    if not reference_text.endswith((".", "!", "?", "؟", "。")):
        reference_text += "."
    return f"{reference_text} {text.strip()}"


def load_model(
    files: ModelFiles, *, device: str, dtype: str, sampling: SamplingConfig
) -> SilmaModel:
    """Blocking: build the upstream classes and fill them from local files."""
    files.check()
    upstream = load_upstream()
    torch = upstream.torch
    dev, dt = pick_device(torch, device, dtype)
    backbone, arch, mel = _architecture(upstream, files.architecture)
    if backbone != "DiT":
        raise ConfigError(f"SILMA backbone {backbone!r} is not supported (only DiT)")
    vocab = read_vocab(files.vocab)
    transformer = upstream.DiT(**arch, text_num_embeds=len(vocab), mel_dim=mel.n_mels)
    cfm = upstream.CFM(
        transformer=transformer,
        mel_spec_kwargs={
            "n_fft": mel.n_fft, "hop_length": mel.hop_length, "win_length": mel.win_length,
            "n_mel_channels": mel.n_mels, "target_sample_rate": mel.sample_rate,
            "mel_spec_type": "vocos",
        },
        odeint_kwargs={"method": "euler"},
        vocab_char_map=vocab,
    )
    state = _model_state(torch, files.checkpoint)
    try:
        cfm.load_state_dict(state)
    except RuntimeError as exc:
        raise ConfigError(
            f"SILMA checkpoint {files.checkpoint} does not fit the architecture: {exc}"
        ) from exc
    cfm = cfm.to(dev, dt).eval()
    vocoder = _vocoder(upstream, files.vocoder, mel, dev)
    return SilmaModel(upstream, cfm, vocoder, mel, dev, dt, sampling)


def read_vocab(path: Path) -> dict[str, int]:
    vocab: dict[str, int] = {}
    with path.open(encoding="utf-8", newline="\n") as lines:
        for index, line in enumerate(lines):
            vocab[line.removesuffix("\n")] = index
    if vocab.get(" ") != 0:
        raise ConfigError(f"SILMA vocab {path}: the first symbol must be a space (token 0)")
    return vocab


def _architecture(
    upstream: Upstream, path: Path | None
) -> tuple[str, dict[str, Any], MelConfig]:
    import yaml

    source = path.read_text(encoding="utf-8") if path else upstream.package_config
    try:
        model = yaml.safe_load(source)["model"]
        spec = model["mel_spec"]
        if spec.get("mel_spec_type", "vocos") != "vocos":
            raise ConfigError(f"SILMA mel_spec_type {spec['mel_spec_type']!r}: only vocos")
        mel = MelConfig(
            sample_rate=int(spec["target_sample_rate"]),
            n_mels=int(spec["n_mel_channels"]),
            hop_length=int(spec["hop_length"]),
            win_length=int(spec["win_length"]),
            n_fft=int(spec["n_fft"]),
        )
        # Training-only switches of the released config are not model shape: leave them out.
        arch = {k: v for k, v in dict(model["arch"]).items() if k != "checkpoint_activations"}
        return str(model["backbone"]), arch, mel
    except (KeyError, TypeError, ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"SILMA architecture {path or 'silma_tts/config.yaml'}: {exc}") from exc


def _model_state(torch: Any, path: Path) -> dict[str, Any]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        raw: dict[str, Any] = {"model_state_dict": load_file(str(path), device="cpu")}
    else:
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many kinds for a damaged or foreign file
            raise ConfigError(f"cannot read the SILMA checkpoint {path}: {exc}") from exc
    state = raw.get("model_state_dict") or raw.get("ema_model_state_dict")
    if not isinstance(state, dict):
        raise ConfigError(f"SILMA checkpoint {path} has no model_state_dict")
    return {
        key.removeprefix("ema_model."): value
        for key, value in state.items()
        # EMA bookkeeping, and mel buffers of old checkpoints (we compute mels ourselves)
        if key not in ("initted", "step")
        and not key.startswith(("mel_spec.", "ema_model.mel_spec."))
    }


def _vocoder(upstream: Upstream, folder: Path, mel: MelConfig, device: Any) -> tuple[Any, Any]:
    import yaml

    torch = upstream.torch
    try:
        config = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))
        features = config["feature_extractor"]["init_args"]
        if (int(features["sample_rate"]), int(features["n_mels"]), int(features["hop_length"])) != (
            mel.sample_rate, mel.n_mels, mel.hop_length
        ):
            raise ConfigError(f"vocoder {folder} does not match the model's mel spectrogram")
        backbone = _vocos_part(upstream.vocos_backbones, "vocos.models.", config["backbone"])
        head = _vocos_part(upstream.vocos_heads, "vocos.heads.", config["head"])
    except (KeyError, TypeError, ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"vocoder config {folder / 'config.yaml'}: {exc}") from exc
    state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    for prefix, part in (("backbone.", backbone), ("head.", head)):
        own = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
        try:
            part.load_state_dict(own)
        except RuntimeError as exc:
            raise ConfigError(f"vocoder weights in {folder} do not fit its config: {exc}") from exc
    return backbone.to(device).eval(), head.to(device).eval()


def _vocos_part(module: Any, prefix: str, spec: dict[str, Any]) -> Any:
    """Build a vocos class named in config.yaml, refusing anything outside its own module."""
    path = str(spec["class_path"])
    name = path.removeprefix(prefix)
    if not path.startswith(prefix) or "." in name or not hasattr(module, name):
        raise ConfigError(f"vocoder class {path!r} is not a {prefix}* class")
    return getattr(module, name)(**dict(spec.get("init_args") or {}))
