"""DTMF out, checked the way a receiver would: a Goertzel detector (written here, independent of
the generator) finds each digit's two Q.23 frequencies at the intended levels and nothing at the
other six; tones and pauses last what was asked; the audio is whole 20 ms frames."""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pytest

from bridge.audio.dtmf import FRAME_SAMPLES, MAX_DIGITS, WAIT_MS, dtmf_tones
from bridge.audio.mulaw import ULAW_SILENCE, ulaw2lin

ROWS = (697, 770, 852, 941)
COLUMNS = (1209, 1336, 1477, 1633)
KEYS = {"1": (697, 1209), "2": (697, 1336), "3": (697, 1477), "A": (697, 1633),
        "4": (770, 1209), "5": (770, 1336), "6": (770, 1477), "B": (770, 1633),
        "7": (852, 1209), "8": (852, 1336), "9": (852, 1477), "C": (852, 1633),
        "*": (941, 1209), "0": (941, 1336), "#": (941, 1477), "D": (941, 1633)}
RATE = 8000
# G.711's digital milliwatt: 0 dBm0 by definition, the reference for every level below.
DIGITAL_MILLIWATT = bytes([0x1E, 0x0B, 0x0B, 0x1E, 0x9E, 0x8B, 0x8B, 0x9E])


def goertzel_amplitude(x: np.ndarray, freq: float) -> float:
    """The amplitude of `freq` in `x` (a sine of amplitude a reads a)."""
    coeff = 2 * math.cos(2 * math.pi * freq / RATE)
    s1 = s2 = 0.0
    for sample in x:
        s1, s2 = sample + coeff * s1 - s2, s1
    power = s1 * s1 + s2 * s2 - coeff * s1 * s2
    return 2 * math.sqrt(max(power, 0.0)) / len(x)


def dbm0(amplitude: float) -> float:
    reference = float(np.sqrt(np.mean(ulaw2lin(DIGITAL_MILLIWATT).astype(float) ** 2)))
    return 20 * math.log10(amplitude / math.sqrt(2) / reference)


def tone_spans(pcm: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) sample indices of each stretch of sound, split at silences of 10 ms+."""
    loud = np.abs(pcm) > 64
    spans: list[tuple[int, int]] = []
    start = None
    quiet = 0
    for i, on in enumerate(loud):
        if on:
            if start is None:
                start = i
            quiet = 0
            end = i + 1
        elif start is not None:
            quiet += 1
            if quiet >= 80:
                spans.append((start, end))
                start = None
    if start is not None:
        spans.append((start, end))
    return spans


def test_each_key_is_its_two_frequencies_at_receiver_levels():
    for key, (row, column) in KEYS.items():
        pcm = ulaw2lin(dtmf_tones(key)).astype(float)
        # The steady middle of the tone (its 3 ms ramps left out), a whole 40 ms window.
        steady = pcm[80:720]
        levels = {f: goertzel_amplitude(steady, f) for f in ROWS + COLUMNS}
        low, high = dbm0(levels[row]), dbm0(levels[column])
        assert -11 <= low <= -9, (key, low)
        assert -9 <= high <= -7, (key, high)
        assert 0 < high - low < 4  # positive twist, well inside the 4 dB reverse-twist limit
        for other, amplitude in levels.items():
            if other not in (row, column):
                assert dbm0(amplitude) < low - 20, (key, other, dbm0(amplitude))


def test_lowercase_letters_are_the_same_keys():
    assert dtmf_tones("abcd") == dtmf_tones("ABCD")


def test_durations_are_the_asked_tone_and_pause_in_whole_frames():
    for tone_ms, gap_ms in ((100, 60), (40, 40), (70, 45)):
        audio = dtmf_tones("159#", tone_ms=tone_ms, gap_ms=gap_ms)
        assert len(audio) % FRAME_SAMPLES == 0
        body = 4 * (tone_ms + gap_ms) * 8
        assert body <= len(audio) < body + FRAME_SAMPLES
        assert set(audio[body:]) <= {ULAW_SILENCE}  # the padding is silence
        spans = tone_spans(ulaw2lin(audio))
        assert len(spans) == 4
        for n, (start, end) in enumerate(spans):
            # Each tone begins on its slot; the ramps' first and last samples are near zero.
            assert abs(start - n * (tone_ms + gap_ms) * 8) <= 8
            assert abs((end - start) - tone_ms * 8) <= 16
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert start - end >= gap_ms * 8 - 16


def test_each_digit_in_a_sequence_is_detected_in_order():
    digits = "0123456789*#ABCD"
    pcm = ulaw2lin(dtmf_tones(digits)).astype(float)
    heard = ""
    for start, end in tone_spans(pcm):
        window = pcm[start:end]
        row = max(ROWS, key=lambda f: goertzel_amplitude(window, f))
        column = max(COLUMNS, key=lambda f: goertzel_amplitude(window, f))
        heard += next(k for k, pair in KEYS.items() if pair == (row, column))
    assert heard == digits


def test_w_waits_half_a_second():
    plain = dtmf_tones("12")
    waited = dtmf_tones("1w2")
    assert len(waited) - len(plain) == WAIT_MS * 8  # both already whole frames
    spans = tone_spans(ulaw2lin(waited))
    assert len(spans) == 2
    assert spans[1][0] - spans[0][1] >= (60 + 500) * 8 - 16


def test_no_sample_clips():
    pcm = ulaw2lin(dtmf_tones("D", tone_ms=1000))
    assert int(np.abs(pcm.astype(np.int32)).max()) < 32000


@pytest.mark.parametrize(("digits", "kwargs", "message"), [
    ("", {}, "no DTMF digits"),
    ("1" * (MAX_DIGITS + 1), {}, f"at most {MAX_DIGITS}"),
    ("12x3+", {}, "not DTMF keys: '+x'"),
    ("1", {"tone_ms": 20}, "tone_ms=20"),
    ("1", {"tone_ms": 5000}, "tone_ms=5000"),
    ("1", {"gap_ms": 10}, "gap_ms=10"),
])
def test_bad_input_is_refused_with_a_reason(digits, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        dtmf_tones(digits, **kwargs)


def test_the_longest_sequence_is_accepted():
    assert len(dtmf_tones("#" * MAX_DIGITS)) == MAX_DIGITS * 160 * 8
