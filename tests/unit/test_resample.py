import numpy as np
import pytest

from bridge.audio.resample import StreamResampler, float_to_pcm16, pcm16_to_float

OUT_RATE = 8000
TRANSIENT_S = 0.1  # filter warm-up and tail, left out of level measurements


def tone(freq: float, rate: int, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def resample_whole(resampler: StreamResampler, x: np.ndarray) -> np.ndarray:
    return np.concatenate([resampler.process(x), resampler.flush()])


def resample_in_pieces(resampler: StreamResampler, x: np.ndarray, piece: int) -> np.ndarray:
    parts = [resampler.process(x[i : i + piece]) for i in range(0, len(x), piece)]
    return np.concatenate([*parts, resampler.flush()])


def gain_db(x: np.ndarray, y: np.ndarray, in_rate: int) -> float:
    """Level of y relative to x, both trimmed of the filter transients."""
    xi = int(TRANSIENT_S * in_rate)
    yi = int(TRANSIENT_S * OUT_RATE)
    rms_in = np.sqrt(np.mean(np.square(x[xi:-xi], dtype=np.float64)))
    rms_out = np.sqrt(np.mean(np.square(y[yi:-yi], dtype=np.float64)))
    return float(20 * np.log10(rms_out / rms_in))


@pytest.mark.parametrize("in_rate", [24000, 22050])
@pytest.mark.parametrize("freq", [300, 1000, 2000, 3000, 3400])
def test_passband_is_flat_to_3400_hz(in_rate: int, freq: int) -> None:
    x = tone(freq, in_rate)
    y = resample_whole(StreamResampler(in_rate, OUT_RATE), x)
    assert abs(gain_db(x, y, in_rate)) < 0.5


@pytest.mark.parametrize("in_rate", [24000, 22050])
def test_5_khz_is_attenuated_60_db(in_rate: int) -> None:
    # Above the 4 kHz output Nyquist: without the anti-alias filter it would fold to 3 kHz.
    x = tone(5000, in_rate)
    y = resample_whole(StreamResampler(in_rate, OUT_RATE), x)
    assert gain_db(x, y, in_rate) < -60


@pytest.mark.parametrize("in_rate", [24000, 22050])
def test_20_ms_pieces_give_the_same_output_as_one_block(in_rate: int) -> None:
    x = tone(440, in_rate, seconds=1.5) * np.linspace(0, 1, int(in_rate * 1.5), dtype=np.float32)
    whole = resample_whole(StreamResampler(in_rate, OUT_RATE), x)
    pieces = resample_in_pieces(StreamResampler(in_rate, OUT_RATE), x, in_rate // 50)
    assert len(pieces) == len(whole)
    assert np.allclose(pieces, whole, atol=1e-6)


@pytest.mark.parametrize("in_rate", [24000, 22050])
@pytest.mark.parametrize("seconds", [1.0, 0.4217])
def test_output_length_follows_the_ratio(in_rate: int, seconds: float) -> None:
    x = tone(1000, in_rate, seconds)
    y = resample_whole(StreamResampler(in_rate, OUT_RATE), x)
    assert abs(len(y) - len(x) * OUT_RATE / in_rate) <= 1


def test_holds_back_the_start_until_flush() -> None:
    resampler = StreamResampler(24000, OUT_RATE)
    first = resampler.process(tone(1000, 24000, seconds=0.02))
    assert first.dtype == np.float32
    assert len(first) < 160  # less than the 20 ms the ratio promises: soxr holds it back
    assert len(first) + len(resampler.flush()) == 160


def test_flush_leaves_it_ready_for_a_new_utterance() -> None:
    a, b = tone(700, 24000, 0.3), tone(1900, 24000, 0.5)
    reused = StreamResampler(24000, OUT_RATE)
    resample_whole(reused, a)
    np.testing.assert_array_equal(
        resample_whole(reused, b), resample_whole(StreamResampler(24000, OUT_RATE), b)
    )


def test_reset_drops_held_samples() -> None:
    resampler = StreamResampler(24000, OUT_RATE)
    resampler.process(tone(700, 24000, 0.05))
    resampler.reset()
    assert resampler.flush().size == 0
    b = tone(1900, 24000, 0.5)
    resampler.process(tone(700, 24000, 0.05))
    resampler.reset()
    np.testing.assert_array_equal(
        resample_whole(resampler, b), resample_whole(StreamResampler(24000, OUT_RATE), b)
    )


def test_same_rate_passes_samples_through() -> None:
    resampler = StreamResampler(8000, 8000)
    x = tone(1000, 8000, 0.1)
    np.testing.assert_array_equal(resampler.process(x), x)
    assert resampler.flush().size == 0
    assert (resampler.in_rate, resampler.out_rate) == (8000, 8000)


def test_converts_other_dtypes_and_rejects_non_mono() -> None:
    resampler = StreamResampler(24000, OUT_RATE)
    y = resample_whole(resampler, tone(1000, 24000, 0.3).astype(np.float64))
    assert y.dtype == np.float32
    assert len(y) == 2400
    with pytest.raises(ValueError, match="mono"):
        resampler.process(np.zeros((10, 2), dtype=np.float32))


@pytest.mark.parametrize(("in_rate", "out_rate"), [(0, 8000), (24000, -1)])
def test_rejects_bad_rates(in_rate: int, out_rate: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        StreamResampler(in_rate, out_rate)


def test_float_to_pcm16_scales_rounds_and_clips() -> None:
    x = np.array([0.0, 1.0, -1.0, 1.4 / 32767, 1.6 / 32767, -1.6 / 32767, 2.0, -2.0])
    assert float_to_pcm16(x.astype(np.float32)).tolist() == [
        0, 32767, -32767, 1, 2, -2, 32767, -32768,
    ]  # fmt: skip
    assert float_to_pcm16(np.zeros(0, dtype=np.float32)).dtype == np.int16


def test_pcm16_float_round_trip_is_exact_for_every_value() -> None:
    pcm = np.arange(-32768, 32768, dtype=np.int16)
    as_float = pcm16_to_float(pcm)
    assert as_float.dtype == np.float32
    assert as_float.max() == 1.0
    assert -1.0001 < as_float.min() < -1.0
    np.testing.assert_array_equal(float_to_pcm16(as_float), pcm)
