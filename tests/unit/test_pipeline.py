import numpy as np
import pytest

from bridge.audio.framer import FRAME_BYTES
from bridge.audio.mulaw import ULAW_SILENCE, lin2ulaw
from bridge.audio.pipeline import TelephonyEncoder
from bridge.audio.resample import float_to_pcm16

RATE = 24000


def speech_like(seconds: float, rate: int = RATE) -> np.ndarray:
    """Tones around speech formants under a syllable-rate envelope."""
    t = np.arange(int(seconds * rate)) / rate
    tones = 0.3 * np.sin(2 * np.pi * 170 * t) + 0.2 * np.sin(2 * np.pi * 900 * t)
    tones += 0.1 * np.sin(2 * np.pi * 2600 * t)
    envelope = 0.5 - 0.5 * np.cos(2 * np.pi * 3.5 * t)
    return (tones * envelope).astype(np.float32)


def encode_in_pieces(encoder: TelephonyEncoder, x: np.ndarray, piece: int) -> bytes:
    out = bytearray()
    for i in range(0, len(x), piece):
        chunk = encoder.process(x[i : i + piece])
        assert len(chunk) % FRAME_BYTES == 0
        out += chunk
    return bytes(out + encoder.flush())


@pytest.mark.parametrize("piece_ms", [20, 40])
def test_pieces_give_the_same_bytes_as_one_block(piece_ms: int) -> None:
    x = speech_like(1.37)
    whole = encode_in_pieces(TelephonyEncoder(RATE), x, len(x))
    pieces = encode_in_pieces(TelephonyEncoder(RATE), x, RATE * piece_ms // 1000)
    assert pieces == whole


@pytest.mark.parametrize("seconds", [1.0, 1.37, 0.05])
def test_duration_is_preserved(seconds: float) -> None:
    x = speech_like(seconds)
    out = encode_in_pieces(TelephonyEncoder(RATE), x, 480)
    assert len(out) % FRAME_BYTES == 0
    expected = len(x) / 3  # 8 kHz samples, one mu-law byte each
    assert expected <= len(out) < expected + FRAME_BYTES  # only the last frame's padding


def test_flush_pads_the_last_frame_with_silence() -> None:
    x = np.full(1000 * 3, 0.5, dtype=np.float32)  # 1000 samples out: 6 frames + 40 bytes
    encoder = TelephonyEncoder(RATE)
    out = encoder.process(x) + encoder.flush()
    assert len(out) == 7 * FRAME_BYTES
    assert out[1000:] == bytes([ULAW_SILENCE]) * 120
    assert ULAW_SILENCE not in out[100:900]  # the signal itself is loud, never silence


def test_output_lags_until_flush() -> None:
    encoder = TelephonyEncoder(RATE)
    assert encoder.process(speech_like(0.02)) == b""  # the resampler holds the start
    assert len(encoder.flush()) == FRAME_BYTES


def test_encodes_the_resampled_signal() -> None:
    # At 8 kHz input there is no resampling: the bytes are plain mu-law of the samples.
    x = speech_like(0.1, 8000)
    encoder = TelephonyEncoder(8000)
    assert encoder.process(x) + encoder.flush() == lin2ulaw(float_to_pcm16(x))


def test_flush_leaves_it_ready_for_the_next_utterance() -> None:
    a, b = speech_like(0.6), speech_like(0.9)[::-1].copy()
    reused = TelephonyEncoder(RATE)
    encode_in_pieces(reused, a, 960)
    assert not reused.active
    assert encode_in_pieces(reused, b, 480) == encode_in_pieces(TelephonyEncoder(RATE), b, 480)


def test_reset_drops_everything() -> None:
    encoder = TelephonyEncoder(RATE)
    encoder.process(speech_like(0.3))
    assert encoder.active
    encoder.reset()
    assert not encoder.active
    assert encoder.flush() == b""
    b = speech_like(0.5)
    encoder.process(speech_like(0.11))
    encoder.reset()
    assert encode_in_pieces(encoder, b, 480) == encode_in_pieces(TelephonyEncoder(RATE), b, 480)


def test_input_rate_changes_between_utterances() -> None:
    encoder = TelephonyEncoder(RATE)
    encode_in_pieces(encoder, speech_like(0.2), 480)
    encoder.set_input_rate(22050)
    assert encoder.in_rate == 22050
    x = speech_like(1.0, 22050)
    out = encode_in_pieces(encoder, x, 441)
    assert out == encode_in_pieces(TelephonyEncoder(22050), x, 441)
    assert 8000 <= len(out) < 8000 + FRAME_BYTES


def test_input_rate_cannot_change_mid_utterance() -> None:
    encoder = TelephonyEncoder(RATE)
    encoder.process(speech_like(0.1))
    encoder.set_input_rate(RATE)  # same rate: nothing to change
    with pytest.raises(RuntimeError, match="middle of an utterance"):
        encoder.set_input_rate(22050)
    encoder.reset()
    encoder.set_input_rate(22050)
    assert encoder.in_rate == 22050


def test_empty_chunks_do_not_start_an_utterance() -> None:
    encoder = TelephonyEncoder(RATE)
    assert encoder.process(np.zeros(0, dtype=np.float32)) == b""
    assert not encoder.active
    encoder.set_input_rate(16000)
    assert encoder.in_rate == 16000
