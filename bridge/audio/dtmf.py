"""DTMF digits as in-band audio: 8 kHz mu-law, whole 20 ms frames, ready for the paced sender
(an agent dialling through another IVR).

What a receiver accepts, and what this module therefore emits:
- Frequencies, ITU-T Q.23: rows 697/770/852/941 Hz (low group), columns 1209/1336/1477/1633 Hz
  (high group). Receivers must accept +/-1.5% and reject +/-3.5% (Q.24); the tones here are
  exact to floating-point precision.
- Durations, Q.24: a tone of 40 ms or more must be accepted and one under 23 ms rejected; the
  pause between digits likewise must be at least 40 ms (some receivers want 45-50 ms on and
  45 ms off). Defaults: 100 ms on, 60 ms off, the usual telephone timing; the bounds below keep
  callers inside what every receiver accepts and away from minutes-long tones.
- Levels: telephone sets send the low group around -10 dBm0 and the high group about 2 dB
  louder (positive twist, which offsets the line's high-frequency loss); receivers accept a
  twist of up to 8 dB normal (low louder) and 4 dB reverse (high louder), and signals down to
  about -25 dBm0. Here: -10 dBm0 low, -8 dBm0 high, so the sum stays well under mu-law's
  +3.17 dBm0 overload point (G.711; 0 dBm0 is the level of G.711's digital milliwatt).
- Each tone starts and ends with a short raised-cosine ramp: a hard edge splatters energy over
  the band, which a receiver's out-of-band energy check can take for speech.

Sources (via the `search` tool): the 3amsystems World Tone Database ("Tone dialing": 100 ms on,
100 ms off, -11/-9 dBm nominal); Q.24's limits as summarised in the UT Austin real-time DSP
course notes (Evans) and the DVSI AMBE-2000 manual's DTMF detection table (+/-1.5% / 3.5%,
40 ms / 23 ms, twist 8 dB normal / 4 dB reverse, -25 dBm0 minimum, +3.17 dBm0 maximum sinusoid);
the H3C and 3Com router manuals citing Q.24 (45 ms tone, 23 ms interval); the Multi-Tech
receiver note (50 ms on, 45 ms off, 100 ms cycle).

`w` is a half-second wait, as in Twilio's sendDigits: an IVR often needs a moment between a
menu choice and the next digits.
"""

from __future__ import annotations

import numpy as np

from bridge.audio.mulaw import ULAW_SILENCE, lin2ulaw

SAMPLE_RATE = 8000
FRAME_SAMPLES = 160  # 20 ms: the paced sender's frame
MAX_DIGITS = 32  # more than any IVR asks for in one go; the audio stays under ~20 s
TONE_MS_RANGE = (40, 1000)  # Q.24's shortest accepted tone; a longer one is a held key
GAP_MS_RANGE = (40, 1000)
WAIT = "W"  # digits are upper-cased first: w or W
WAIT_MS = 500

LOW_HZ = (697.0, 770.0, 852.0, 941.0)
HIGH_HZ = (1209.0, 1336.0, 1477.0, 1633.0)
KEYPAD = ("123A", "456B", "789C", "*0#D")  # row i uses LOW_HZ[i], column j HIGH_HZ[j]
FREQUENCIES: dict[str, tuple[float, float]] = {
    key: (LOW_HZ[row], HIGH_HZ[col])
    for row, keys in enumerate(KEYPAD) for col, key in enumerate(keys)
}

LOW_DBM0 = -10.0
HIGH_DBM0 = -8.0
# Peak of a 0 dBm0 sine on the int16 scale mu-law encodes: the codec's largest magnitude
# (8159 on its 14-bit scale, << 2) is a +3.17 dBm0 sine's peak (G.711).
PEAK_0DBM0 = 8159 * 4 / 10 ** (3.17 / 20)
RAMP_MS = 3  # short against 40 ms, long enough to keep the splatter below the tones


def peak(dbm0: float) -> float:
    """The int16 peak amplitude of a sine at `dbm0`."""
    return PEAK_0DBM0 * 10 ** (dbm0 / 20)


def dtmf_tones(digits: str, *, tone_ms: int = 100, gap_ms: int = 60) -> bytes:
    """8 kHz mu-law audio of `digits` (0-9, *, #, A-D, case-insensitive; `w` waits 500 ms),
    each tone `tone_ms` long and followed by `gap_ms` of silence, padded with silence to whole
    20 ms frames. ValueError names what is wrong: no digits, more than MAX_DIGITS, a character
    that is not a DTMF key, or a duration outside what receivers accept."""
    keys = digits.upper()
    if not keys:
        raise ValueError("no DTMF digits to play")
    if len(keys) > MAX_DIGITS:
        raise ValueError(f"{len(keys)} DTMF digits: at most {MAX_DIGITS} at a time")
    unknown = sorted({c for c in digits if c.upper() not in FREQUENCIES and c.upper() != WAIT})
    if unknown:
        raise ValueError(f"not DTMF keys: {''.join(unknown)!r} (use 0-9, *, #, A-D, or w)")
    _check_ms("tone_ms", tone_ms, TONE_MS_RANGE)
    _check_ms("gap_ms", gap_ms, GAP_MS_RANGE)

    tone = _samples(tone_ms)
    gap = np.zeros(_samples(gap_ms))
    wait = np.zeros(_samples(WAIT_MS))
    envelope = _envelope(tone)
    t = np.arange(tone) / SAMPLE_RATE
    pieces: list[np.ndarray] = []
    for key in keys:
        if key == WAIT:
            pieces.append(wait)
            continue
        low, high = FREQUENCIES[key]
        pieces.append(envelope * (peak(LOW_DBM0) * np.sin(2 * np.pi * low * t)
                                  + peak(HIGH_DBM0) * np.sin(2 * np.pi * high * t)))
        pieces.append(gap)
    audio = lin2ulaw(np.rint(np.concatenate(pieces)).astype(np.int16))
    return audio + bytes([ULAW_SILENCE]) * (-len(audio) % FRAME_SAMPLES)


def _check_ms(name: str, value: int, bounds: tuple[int, int]) -> None:
    low, high = bounds
    if not low <= value <= high:
        raise ValueError(f"{name}={value}: DTMF needs {low} to {high} ms")


def _samples(ms: int) -> int:
    return ms * SAMPLE_RATE // 1000


def _envelope(n: int) -> np.ndarray:
    ramp = _samples(RAMP_MS)
    envelope = np.ones(n)
    rise = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
    envelope[:ramp] = rise
    envelope[n - ramp:] = rise[::-1]
    return envelope
