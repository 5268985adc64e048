"""SilmaModel.generate: one item is upstream's CFM.sample; items batched come out as alone.

Real upstream classes (silma-tts 1.0.5's CFM and DiT, vocos) at a tiny size with random weights,
written to a temporary folder. Agreement is measured as a signal-to-error ratio over the log-mel
of the generated audio: 10 * log10(sum(a**2) / sum((a - b)**2)), in dB (inf: identical). At
N(0, 0.2) weights the model is sensitive to everything it is given, so a leak across the batch
shows plainly; at the default N(0, 0.05) it is smoother and a leak is smaller.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

if importlib.util.find_spec("silma_tts") is None or importlib.util.find_spec("torch") is None:
    if os.environ.get("CI"):  # CI installs the extra: a skip there would hide a broken install
        raise RuntimeError("the [silma] extra is not installed (see pyproject.toml)")
    pytest.skip("the [silma] extra is not installed", allow_module_level=True)

from bridge.tts_server.engines.silma.model import (
    SamplingConfig,
    SilmaModel,
    SpeechItem,
    load_model,
)
from tests.random_model import write_random_model

RATE = 24000
MIN_DB = 60.0
TRANSCRIPT = "This is the voice I would like you to use. "
# (reference seconds, text, frames past the reference, seed): lengths all differ
SPECS = (
    (2.0, "Thank you for calling, how can I help?", 70, 11),
    (3.1, "Goodbye.", 15, 12),
    (1.3, "Your appointment is on Tuesday at ten.", 95, 13),
    (2.6, "مَرْحَبًا بِكُمْ فِي خِدْمَةِ العُمَلَاءِ", 60, 14),
)


def speechlike(seconds: float, seed: int) -> np.ndarray:
    """Syllable-rate bursts of noise: a reference clip for random weights."""
    rng = np.random.default_rng(seed)
    n = round(seconds * RATE)
    envelope = (np.sin(2 * np.pi * 4 * np.arange(n) / RATE) > -0.3).astype(np.float32)
    return (rng.standard_normal(n) * 0.1 * envelope).astype(np.float32)


def load(folder: Path, *, sampling: SamplingConfig | None = None, **model: Any) -> SilmaModel:
    files = write_random_model(folder, tiny=True, **model)
    return load_model(files, device="cpu", dtype="float32", sampling=sampling or SamplingConfig())


@pytest.fixture(scope="module")
def smooth(tmp_path_factory: pytest.TempPathFactory) -> SilmaModel:
    return load(tmp_path_factory.mktemp("silma-0.05"))


@pytest.fixture(scope="module")
def sensitive(tmp_path_factory: pytest.TempPathFactory) -> SilmaModel:
    return load(tmp_path_factory.mktemp("silma-0.2"), scale=0.2)


def speech_items(model: SilmaModel, *, seed: int | None = None) -> list[SpeechItem]:
    """Different references, prompts, lengths and (unless one is given) seeds."""
    items = []
    for index, (seconds, text, extra, own_seed) in enumerate(SPECS):
        reference = model.mel_frames(speechlike(seconds, seed=index))
        frames = int(reference.shape[1])
        items.append(SpeechItem(reference, TRANSCRIPT + text, frames + extra, frames,
                                own_seed if seed is None else seed))
    return items


def log_mel(model: SilmaModel, wave: np.ndarray) -> np.ndarray:
    return np.asarray(model.mel_frames(wave)[0].float().cpu().numpy())


def agreement_db(model: SilmaModel, a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    ours, theirs = log_mel(model, a), log_mel(model, b)
    error = float(np.sum((ours - theirs) ** 2))
    return float("inf") if error == 0 else float(10 * np.log10(np.sum(ours**2) / error))


def each_alone(model: SilmaModel, items: Sequence[SpeechItem]) -> list[np.ndarray]:
    return [model.generate([item])[0] for item in items]


def upstream_alone(model: SilmaModel, item: SpeechItem, *, skip: int | None = None) -> np.ndarray:
    """Upstream's CFM.sample on one item and the same vocoder on its generated frames."""
    torch = model._torch
    sampling = model.sampling
    with torch.inference_mode():
        out, _ = model._cfm.sample(
            cond=item.reference, text=[item.prompt], duration=item.frames,
            steps=sampling.steps, cfg_strength=sampling.cfg_strength,
            sway_sampling_coef=sampling.sway_coef, seed=item.seed,
        )
        return model._vocode(out[:, item.skip if skip is None else skip :])


def test_one_item_is_upstreams_cfm_sample(smooth: SilmaModel) -> None:
    items = speech_items(smooth)
    for item in items[:2]:
        ours = smooth.generate([item])[0]
        theirs = upstream_alone(smooth, item)
        assert float(np.max(np.abs(log_mel(smooth, ours) - log_mel(smooth, theirs)))) < 1e-6
    # A length too short for the prompt gets CFM.sample's clamp: one frame past its tokens.
    prompt = TRANSCRIPT * 3
    reference = smooth.mel_frames(speechlike(0.5, seed=9))
    item = SpeechItem(reference, prompt, 1, int(reference.shape[1]), 3)
    audio = smooth.generate([item])[0]
    hop = smooth.mel.hop_length
    assert audio.size == (len(prompt) + 1 - item.skip - 1) * hop  # vocos: (frames - 1) * hop
    assert np.array_equal(audio, upstream_alone(smooth, item))


@pytest.mark.parametrize("weights", ["smooth", "sensitive"])
def test_batched_items_sound_as_they_do_alone(
    weights: str, request: pytest.FixtureRequest
) -> None:
    model: SilmaModel = request.getfixturevalue(weights)
    assert model.exact_batching
    items = speech_items(model)
    together = model.generate(items)
    for item, batched, alone in zip(items, together, each_alone(model, items), strict=True):
        assert batched.size > 0
        assert agreement_db(model, batched, alone) >= MIN_DB, item.prompt


def test_upstreams_own_padded_batch_does_not(sensitive: SilmaModel) -> None:
    """CFM.sample batched (one seed for all, the only way it can) vs each item alone: the
    shorter items see the padding; the longest has none and agrees."""
    torch = sensitive._torch
    sampling = sensitive.sampling
    items = speech_items(sensitive, seed=5)
    references = [item.reference[0] for item in items]
    with torch.inference_mode():
        out, _ = sensitive._cfm.sample(
            cond=torch.nn.utils.rnn.pad_sequence(references, batch_first=True),
            text=[item.prompt for item in items],
            duration=torch.tensor([item.frames for item in items]),
            lens=torch.tensor([reference.shape[0] for reference in references]),
            steps=sampling.steps, cfg_strength=sampling.cfg_strength,
            sway_sampling_coef=sampling.sway_coef, seed=5,
        )
        batched = [
            sensitive._vocode(out[row : row + 1, item.skip : item.frames])
            for row, item in enumerate(items)
        ]
    agreement = [
        agreement_db(sensitive, ours, alone)
        for ours, alone in zip(batched, each_alone(sensitive, items), strict=True)
    ]
    longest = max(range(len(items)), key=lambda row: items[row].frames)
    shorter = [db for row, db in enumerate(agreement) if row != longest]
    assert max(shorter) < MIN_DB
    # Only rounding separates the longest from itself alone (its batch is another size).
    assert agreement[longest] > max(shorter) + 30


def test_same_seeds_same_speech_and_a_seed_is_an_items_own(sensitive: SilmaModel) -> None:
    items = speech_items(sensitive)
    first = sensitive.generate(items)
    again = sensitive.generate(items)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    # Another seed for one item changes that item only.
    changed = [*items[:2], dataclasses.replace(items[2], seed=99), items[3]]
    other = sensitive.generate(changed)
    assert agreement_db(sensitive, other[2], first[2]) < 40
    for row in (0, 1, 3):
        assert agreement_db(sensitive, other[row], first[row]) >= MIN_DB


@pytest.mark.parametrize(
    ("model", "sampling"),
    [
        ({"arch_overrides": {"pe_attn_head": 1}}, SamplingConfig()),
        ({}, SamplingConfig(steps=6, cfg_strength=0.0)),  # no unconditional pass
    ],
    ids=["rotary-on-one-head", "unguided"],
)
def test_other_configurations_batch_exactly(
    model: dict[str, Any], sampling: SamplingConfig, tmp_path: Path
) -> None:
    silma = load(tmp_path, sampling=sampling, scale=0.2, **model)
    assert silma.exact_batching
    items = speech_items(silma)
    for batched, alone in zip(silma.generate(items), each_alone(silma, items), strict=True):
        assert agreement_db(silma, batched, alone) >= MIN_DB


def test_a_model_whose_forward_is_not_reproduced_runs_items_alone(tmp_path: Path) -> None:
    silma = load(tmp_path, sampling=SamplingConfig(steps=4),
                 arch_overrides={"long_skip_connection": True})
    assert not silma.exact_batching
    items = speech_items(silma)
    together = silma.generate(items)
    assert all(
        np.array_equal(batched, upstream_alone(silma, item))
        for item, batched in zip(items, together, strict=True)
    )
