"""Model files with random weights, in the released layout: for tests and benchmarks.

The compute of a forward pass does not depend on the weights' values, so a random model of the
released size times like the real one, and a tiny one exercises every code path in seconds.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from bridge.tts_server.engines.silma.model import MelConfig, ModelFiles
from bridge.tts_server.engines.silma.upstream import load_upstream

TINY_ARCH: dict[str, Any] = {
    "dim": 64, "depth": 2, "heads": 2, "dim_head": 32, "ff_mult": 2, "text_dim": 32,
    "text_mask_padding": True, "conv_layers": 1, "pe_attn_head": None, "attn_backend": "torch",
    "attn_mask_enabled": False,
}
TINY_VOCODER = {"dim": 32, "intermediate_dim": 64, "num_layers": 1}
# The released vocoder (vocos-mel-24khz) and its 24 kHz, 100-band mel front end.
FULL_VOCODER = {"dim": 512, "intermediate_dim": 1536, "num_layers": 8}
ARABIC = "،؛؟ابتثجحخدذرزسشصضطظعغفقكلمنهوي" "ءآأؤإئ" "ةىـٱ"
HARAKAT = "".join(map(chr, range(0x064B, 0x0653))) + "\u0670"  # tanwin .. sukun, dagger alif
VOCAB = [" ", *string.ascii_letters, *string.digits, *".,;:!?'-\"()", *ARABIC, *HARAKAT]


def write_random_model(
    folder: Path,
    *,
    tiny: bool = True,
    seed: int = 0,
    scale: float = 0.05,
    arch_overrides: Mapping[str, Any] | None = None,
) -> ModelFiles:
    """Write checkpoint, vocab, vocoder and architecture files under `folder`; return the paths.

    Weights are N(0, scale**2). At the default, small weights keep the model's output smooth
    (a batching leak shows as a small difference); larger ones make it sensitive to its whole
    input. `arch_overrides` changes the DiT's arguments (tiny or released).
    """
    upstream = load_upstream()
    torch = upstream.torch
    folder.mkdir(parents=True, exist_ok=True)
    mel = MelConfig()
    package = yaml.safe_load(upstream.package_config)["model"]
    arch = dict(TINY_ARCH) if tiny else dict(package["arch"])
    arch.pop("checkpoint_activations", None)
    arch.update(arch_overrides or {})
    architecture = folder / "architecture.yaml"
    model_spec = {
        "backbone": "DiT",
        "arch": arch,
        "mel_spec": {
            "target_sample_rate": mel.sample_rate, "n_mel_channels": mel.n_mels,
            "hop_length": mel.hop_length, "win_length": mel.win_length, "n_fft": mel.n_fft,
            "mel_spec_type": "vocos",
        },
    }
    architecture.write_text(yaml.safe_dump({"model": model_spec}), encoding="utf-8")
    vocab = folder / "vocab.txt"
    vocab.write_text("".join(f"{symbol}\n" for symbol in VOCAB), encoding="utf-8")

    generator = torch.Generator().manual_seed(seed)
    transformer = upstream.DiT(**arch, text_num_embeds=len(VOCAB), mel_dim=mel.n_mels)
    cfm = upstream.CFM(transformer=transformer, vocab_char_map={s: i for i, s in enumerate(VOCAB)})
    _randomize(torch, cfm, generator, scale)
    checkpoint = folder / "model.pt"
    torch.save({"model_state_dict": cfm.state_dict()}, checkpoint)

    sizes = TINY_VOCODER if tiny else FULL_VOCODER
    vocoder_config = {
        "feature_extractor": {
            "class_path": "vocos.feature_extractors.MelSpectrogramFeatures",
            "init_args": {
                "sample_rate": mel.sample_rate, "n_fft": mel.n_fft,
                "hop_length": mel.hop_length, "n_mels": mel.n_mels, "padding": "center",
            },
        },
        "backbone": {
            "class_path": "vocos.models.VocosBackbone",
            "init_args": {"input_channels": mel.n_mels, **sizes},
        },
        "head": {
            "class_path": "vocos.heads.ISTFTHead",
            "init_args": {
                "dim": sizes["dim"], "n_fft": mel.n_fft, "hop_length": mel.hop_length,
                "padding": "center",
            },
        },
    }
    vocoder = folder / "vocoder"
    vocoder.mkdir(exist_ok=True)
    (vocoder / "config.yaml").write_text(yaml.safe_dump(vocoder_config), encoding="utf-8")
    backbone = upstream.vocos_backbones.VocosBackbone(input_channels=mel.n_mels, **sizes)
    head = upstream.vocos_heads.ISTFTHead(
        dim=sizes["dim"], n_fft=mel.n_fft, hop_length=mel.hop_length, padding="center"
    )
    state = {}
    for prefix, part in (("backbone.", backbone), ("head.", head)):
        _randomize(torch, part, generator, scale)
        state.update({prefix + k: v for k, v in part.state_dict().items()})
    torch.save(state, vocoder / "pytorch_model.bin")
    return ModelFiles(checkpoint, vocab, vocoder, architecture)


def _randomize(torch: Any, module: Any, generator: Any, scale: float) -> None:
    # Upstream zero-initializes its output layers: random values instead, so audio is not silent.
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
