"""The SILMA model on one device: loaded from local files only, several chunks of speech a pass.

Files (the layout of the released model and of the vocos-mel-24khz vocoder):
- checkpoint: model.pt ({"model_state_dict"} or {"ema_model_state_dict"}) or .safetensors
- vocab: vocab.txt, one symbol a line, line number = token id, " " first
- vocoder: a folder with config.yaml (vocos class paths and sizes) and pytorch_model.bin
- architecture: a YAML with model.backbone/arch/mel_spec; by default silma-tts's config.yaml

What the model is given (prompt, length, noise seed) is the front end's: this module only runs
it. One item alone goes through upstream's own `CFM.sample`. Several share a pass of the same
DiT modules and steps in which each item is computed as it is alone. Upstream's own padded batch
is not: under the released config (attn_mask_enabled: False) an item attends to its padding,
the text embedding's GRN normalizes over the padded length, and the positional convolutions
read into the padding. Here no item sees its padding, and so an item sounds the same batched as
alone (on CPU in float32, to the bit).

Not thread-safe: upstream's DiT keeps the text embedding of the call in progress on the
instance (the F5-TTS race that upstream later fixed with thread-local state). Only the
inference executor's single thread calls `generate`, so calls never overlap.
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bridge.errors import ConfigError
from bridge.tts_server.engines.silma.upstream import Upstream, load_upstream

if TYPE_CHECKING:
    from torch import Tensor

MEL_FLOOR = 1e-5  # silma-tts's vocos-type mel: log(clamp(mel, 1e-5))
MAX_FRAMES = 4096  # CFM.sample's cap on a pass's length (reference + speech)
GUIDANCE_OFF = 1e-5  # CFM.sample: below this cfg_strength, no unconditional pass


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
    """One pass's worth of speech, as the front end planned it."""

    reference: Any  # (1, ref_frames, n_mels) log-mel of the prepared clip (mel_frames), on device
    prompt: str  # all the model reads: the reference transcript, then the text to speak
    frames: int  # the pass's length in mel frames, reference included (CFM.sample's duration)
    skip: int  # leading output frames left out of the audio (upstream: the reference's)
    seed: int  # this item's noise, drawn as CFM.sample draws it for one item


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
        # CFM.sample's helpers and the rotary embedding its attention applies: load_upstream
        # has imported both modules already.
        self._utils = importlib.import_module("silma_tts.model.utils")
        self._rotate = importlib.import_module("silma_tts.model.modules").apply_rotary_pos_emb
        dit = cfm.transformer
        # `_sample_together` reproduces the DiT's forward with torch's attention, and without
        # the optional long skip connection (neither differs in the released model): any other
        # model runs its items one at a time.
        self.exact_batching: bool = dit.long_skip_connection is None and all(
            block.attn.processor.attn_backend == "torch" for block in dit.transformer_blocks
        )

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

    def generate(self, items: Sequence[SpeechItem]) -> list[np.ndarray]:
        """Speech for each item in its reference's voice: float32 at the model rate, unscaled.

        Each is the vocoded `out[skip:duration]` of CFM.sample, `duration` being its clamp of
        `frames`. One item is upstream's CFM.sample itself; several share one pass, in which an
        item comes out as it does alone, up to float rounding (when `exact_batching`; otherwise
        they run one after another).
        """
        torch = self._torch
        with torch.inference_mode():
            self._cfm.transformer.clear_cache()  # a failed call may have left its text behind
            if len(items) > 1 and self.exact_batching:
                mels = self._sample_together(items)
            else:
                mels = [self._sample_alone(item) for item in items]
            return [self._vocode(mel) for mel in mels]

    def _duration(self, item: SpeechItem) -> int:
        """CFM.sample's clamp: room for every token and reference frame plus one, capped."""
        needed = max(len(item.prompt), int(item.reference.shape[1])) + 1
        return min(MAX_FRAMES, max(needed, item.frames))

    def _sample_alone(self, item: SpeechItem) -> Tensor:
        out, _ = self._cfm.sample(
            cond=item.reference,
            text=[item.prompt],
            duration=item.frames,
            steps=self.sampling.steps,
            cfg_strength=self.sampling.cfg_strength,
            sway_sampling_coef=self.sampling.sway_coef,
            seed=item.seed,
            max_duration=MAX_FRAMES,
        )
        kept: Tensor = out[:, item.skip : self._duration(item)]
        return kept

    def _sample_together(self, items: Sequence[SpeechItem]) -> list[Tensor]:
        """CFM.sample's Euler integration of the flow for several items in one batch, each
        padded to the longest and computed as it is alone (see `_velocity`)."""
        torch = self._torch
        cfm, utils, sampling = self._cfm, self._utils, self.sampling
        device, dtype = self.device, self.dtype
        durations = [self._duration(item) for item in items]
        longest = max(durations)
        # A reference longer than its pass is cut to it, as CFM.sample's negative padding does.
        references = [
            item.reference[0, :duration].to(dtype)
            for item, duration in zip(items, durations, strict=True)
        ]
        cond = torch.zeros(len(items), longest, cfm.num_channels, device=device, dtype=dtype)
        for row, reference in enumerate(references):
            cond[row, : reference.shape[0]] = reference
        ref_lens = torch.tensor([reference.shape[0] for reference in references], device=device)
        cond_mask = utils.lens_to_mask(ref_lens, length=longest)[..., None]
        tokens = [
            utils.list_str_to_idx([item.prompt], cfm.vocab_char_map).to(device) for item in items
        ]
        # Inputs stacked (halves, items, frames, dim): the conditional half, then, for
        # classifier-free guidance, the unconditional one without reference or text.
        texts = [self._text_rows(tokens, durations, drop=False)]
        audio = [cond]
        if sampling.cfg_strength >= GUIDANCE_OFF:
            texts.append(self._text_rows(tokens, durations, drop=True))
            audio.append(torch.zeros_like(cond))
        noise = []
        for item, duration in zip(items, durations, strict=True):
            torch.manual_seed(item.seed)
            noise.append(torch.randn(duration, cfm.num_channels, device=device, dtype=dtype))
        y = torch.nn.utils.rnn.pad_sequence(noise, batch_first=True)
        times = utils.get_epss_timesteps(sampling.steps, device=device, dtype=dtype)
        times = times + sampling.sway_coef * (torch.cos(torch.pi / 2 * times) - 1 + times)
        batch = _Batch(
            durations, utils.lens_to_mask(torch.tensor(durations, device=device)),
            cfm.transformer.rotary_embed.forward_from_seq_len(longest),
            torch.stack(audio), torch.stack(texts),
        )
        # torchdiffeq's Euler step on CFM.sample's grid: y + (t1 - t0) * f(t0, y)
        for start, end in itertools.pairwise(times):
            y = y + (end - start) * self._velocity(start, y, batch)
        out = torch.where(cond_mask, cond, y)
        return [
            out[row : row + 1, item.skip : duration]
            for row, (item, duration) in enumerate(zip(items, durations, strict=True))
        ]

    def _text_rows(self, tokens: list[Tensor], durations: list[int], *, drop: bool) -> Tensor:
        """The text embedding ends in GRN, a norm over the whole sequence: each item's is made
        at the item's own length, as alone, then zero-padded."""
        embed = self._cfm.transformer.text_embed
        rows = [
            embed(text, duration, drop_text=drop)[0]
            for text, duration in zip(tokens, durations, strict=True)
        ]
        padded: Tensor = self._torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
        return padded

    def _velocity(self, time: Tensor, y: Tensor, batch: _Batch) -> Tensor:
        """The DiT's (guided) flow prediction for every item, each as it is alone."""
        torch = self._torch
        dit = self._cfm.transformer
        halves, items, longest, _ = batch.audio.shape
        # Every item is at the same time step, so its embedding and each block's modulation by
        # it are computed for one item's halves, as alone (a matrix product's rounding depends
        # on its number of rows), and applied to all items' frames laid end to end.
        t = dit.time_embed(time.repeat(1)).repeat(halves, 1)
        x = torch.cat((y.expand(halves, -1, -1, -1), batch.audio, batch.text), dim=-1)
        h = dit.input_embed.proj(x).reshape(halves * items, longest, -1)
        h = h + self._conv_position(h, batch.valid.repeat(halves, 1))
        h = h.reshape(halves, items * longest, -1)
        for block in dit.transformer_blocks:
            norm, gate_msa, shift_mlp, scale_mlp, gate_mlp = block.attn_norm(h, emb=t)
            attended = self._attention(block.attn, norm, batch)
            h = h + gate_msa.unsqueeze(1) * attended
            norm = block.ff_norm(h) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
            h = h + gate_mlp.unsqueeze(1) * block.ff(norm)
        pred = dit.proj_out(dit.norm_out(h, t)).reshape(halves, items, longest, -1)
        if halves == 1:
            conditional: Tensor = pred[0]
            return conditional
        guided: Tensor = pred[0] + (pred[0] - pred[1]) * self.sampling.cfg_strength
        return guided

    def _conv_position(self, h: Tensor, valid: Tensor) -> Tensor:
        """ConvPositionEmbedding with the padding held at zero before and after each of its
        layers: an item's last frames then see the zeros a convolution pads with alone, not the
        projection's bias and the first convolution's spill into the padding."""
        padding = ~valid[:, None, :]
        x = h.permute(0, 2, 1).masked_fill(padding, 0.0)
        for layer in self._cfm.transformer.input_embed.conv_pos_embed.conv1d:
            x = layer(x).masked_fill(padding, 0.0)
        out: Tensor = x.permute(0, 2, 1)
        return out

    def _attention(self, attn: Any, x: Tensor, batch: _Batch) -> Tensor:
        """AttnProcessor's torch path on x laid out (halves, items x frames, dim).

        Projections and rotary embedding act frame by frame, so they run on all frames at once;
        the attention itself runs once per item, over the item's own frames. A padding mask
        would leave the padding out too, but the kernel then sums over a longer row in another
        order: with the tiny model's N(0, 0.2) random weights, some items then came out only
        54-59 dB (log-mel) from alone.
        """
        torch = self._torch
        halves, items, longest = batch.audio.shape[:3]

        def heads(t: Tensor) -> Tensor:  # (halves, items, heads, frames, head dim)
            split: Tensor = t.view(halves, items, longest, attn.heads, -1).transpose(2, 3)
            return split

        query, key, value = heads(attn.to_q(x)), heads(attn.to_k(x)), heads(attn.to_v(x))
        if attn.q_norm is not None:
            query = attn.q_norm(query)
        if attn.k_norm is not None:
            key = attn.k_norm(key)
        freqs, scale = batch.rope
        rotated = attn.processor.pe_attn_head  # heads that get the rotary embedding; None: all
        if rotated is None:
            query = self._rotate(query, freqs, scale)
            key = self._rotate(key, freqs, scale**-1.0)
        else:
            query[:, :, :rotated] = self._rotate(query[:, :, :rotated], freqs, scale)
            key[:, :, :rotated] = self._rotate(key[:, :, :rotated], freqs, scale**-1.0)
        out = torch.zeros(halves, items, longest, query.shape[2] * query.shape[4],
                          device=x.device, dtype=query.dtype)
        for item, frames in enumerate(batch.durations):
            alone = torch.nn.functional.scaled_dot_product_attention(
                query[:, item, :, :frames], key[:, item, :, :frames], value[:, item, :, :frames]
            )
            out[:, item, :frames] = alone.transpose(1, 2).reshape(halves, frames, -1)
        projected: Tensor = attn.to_out[1](attn.to_out[0](out.reshape(halves, items * longest, -1)))
        return projected

    def _vocode(self, mel: Tensor) -> np.ndarray:
        """One item's frames alone, at their own length (vocos' convolutions see no padding)."""
        wave = self._head(self._backbone(mel.float().permute(0, 2, 1)))
        return np.asarray(wave[0].cpu().numpy(), dtype=np.float32)


@dataclasses.dataclass(frozen=True)
class _Batch:
    """What every step of a batched pass shares."""

    durations: list[int]  # each item's frames; the rest of its row is padding
    valid: Tensor  # (items, frames): True within an item's duration
    rope: Any  # the rotary embedding's (frequencies, scale) for the longest item
    audio: Tensor  # (halves, items, frames, n_mels): the reference, zero past it; zeros (uncond)
    text: Tensor  # (halves, items, frames, text dim): the text embedding of each half


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
