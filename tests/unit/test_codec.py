import io
import struct
import wave

import numpy as np
import pytest

from bridge.audio.codec import (
    FORMATS,
    decode_audio,
    encode_audio,
    is_wav,
    raw_bytes_per_second,
    wav_bytes,
)
from bridge.errors import AudioFormatError

PCM, FLOAT, MULAW, EXTENSIBLE = 1, 3, 7, 0xFFFE
# KSDATAFORMAT_SUBTYPE GUID tail shared by PCM/float/mu-law in WAVE_FORMAT_EXTENSIBLE.
GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"


def make_wav(
    payload: bytes,
    *,
    tag: int = PCM,
    channels: int = 1,
    rate: int = 24000,
    bits: int = 16,
    block_align: int | None = None,
    data_size: int | None = None,
    extensible: bool = False,
    before_data: bytes = b"",
) -> bytes:
    """A WAV file built by hand, so the tests can cover what real writers produce."""
    align = channels * bits // 8 if block_align is None else block_align
    fields = struct.pack("<HIIHH", channels, rate, rate * align, align, bits)
    if extensible:
        ext = struct.pack("<HHI", 22, bits, 0) + struct.pack("<H", tag) + GUID_TAIL
        fmt_body = struct.pack("<H", EXTENSIBLE) + fields + ext
    else:
        fmt_body = struct.pack("<H", tag) + fields
    size = len(payload) if data_size is None else data_size
    body = (
        b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt_body))
        + fmt_body
        + before_data
        + b"data"
        + struct.pack("<I", size)
        + payload
    )
    return b"RIFF" + struct.pack("<I", len(body)) + body


def speech_like(n: int = 2400, rate: int = 24000) -> np.ndarray:
    t = np.arange(n) / rate
    return (0.4 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 1300 * t)).astype(
        np.float32
    )


# --- round trips -----------------------------------------------------------------------------


def test_f32le_round_trip_is_exact() -> None:
    x = speech_like()
    data = encode_audio(x, 24000, "f32le")
    assert len(data) == 4 * len(x)
    y, rate = decode_audio(data, "f32le")
    assert rate == 24000
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize("fmt", ["s16le", "wav"])
def test_16_bit_round_trip_within_one_step(fmt: str) -> None:
    x = speech_like()
    data = encode_audio(x, 22050, fmt)
    y, rate = decode_audio(data, fmt, 22050)
    assert rate == 22050
    assert y.dtype == np.float32
    assert np.max(np.abs(y - x)) <= 0.5 / 32767 + 1e-7
    assert encode_audio(y, 22050, fmt) == data  # a second trip changes nothing


def test_ulaw_round_trip() -> None:
    codes = bytes(range(256))
    samples, rate = decode_audio(codes, "ulaw")
    assert rate == 8000  # raw mu-law is telephone audio unless told otherwise
    expected = bytearray(codes)
    expected[0x7F] = 0xFF  # "-0" comes back as 0
    assert encode_audio(samples, rate, "ulaw") == bytes(expected)
    x = speech_like(800, 8000)
    y, _ = decode_audio(encode_audio(x, 8000, "ulaw"), "ulaw")
    assert np.max(np.abs(y - x)) < 0.02  # mu-law's coarsest step near 0.4 full scale


def test_every_format_round_trips() -> None:
    x = speech_like(480)
    for fmt in FORMATS:
        y, rate = decode_audio(encode_audio(x, 16000, fmt), fmt, 16000)
        assert rate == 16000
        assert len(y) == len(x)
        assert np.max(np.abs(y - x)) < 0.02, fmt


def test_format_names_are_case_insensitive() -> None:
    x = speech_like(10)
    assert encode_audio(x, 8000, "S16LE") == encode_audio(x, 8000, "s16le")
    np.testing.assert_array_equal(decode_audio(x.tobytes(), " F32LE ")[0], x)


# --- defaults and WAV detection ----------------------------------------------------------------


def test_raw_float32_at_24_khz_is_the_default() -> None:
    x = speech_like(100)
    y, rate = decode_audio(x.astype("<f4").tobytes())
    assert rate == 24000
    np.testing.assert_array_equal(y, x)
    assert decode_audio(x.tobytes(), "", 16000)[1] == 16000


@pytest.mark.parametrize("fmt", [None, "", "wav", "f32le", "s16le", "ulaw"])
def test_wav_is_detected_whatever_fmt_says(fmt: str | None) -> None:
    x = speech_like(300)
    y, rate = decode_audio(wav_bytes(x, 22050), fmt, 16000)
    assert rate == 22050  # the header wins over the caller's rate
    assert len(y) == 300
    assert np.max(np.abs(y - x)) <= 0.5 / 32767 + 1e-7


def test_empty_payload_is_allowed() -> None:
    for fmt in (None, *FORMATS):
        y, rate = decode_audio(b"", fmt)
        assert y.dtype == np.float32
        assert y.size == 0
        assert rate in (8000, 24000)
    assert decode_audio(b"", "s16le", 16000)[1] == 16000


def test_is_wav() -> None:
    assert is_wav(wav_bytes(np.zeros(4, dtype=np.float32), 8000))
    assert not is_wav(b"RIFF\x00\x00\x00\x00AVI ")
    assert not is_wav(b"RIFF")
    assert not is_wav(np.zeros(8, dtype=np.float32).tobytes())


# --- WAV parsing --------------------------------------------------------------------------------


def test_wav_bytes_is_a_standard_wav() -> None:
    x = speech_like(1234)
    with wave.open(io.BytesIO(wav_bytes(x, 16000)), "rb") as reader:
        assert reader.getnchannels() == 1
        assert reader.getsampwidth() == 2
        assert reader.getframerate() == 16000
        frames = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")
    np.testing.assert_array_equal(frames, np.rint(x * 32767).astype(np.int16))


def test_reads_a_wav_written_by_the_stdlib() -> None:
    pcm = np.array([0, 1000, -1000, 32767, -32768], dtype="<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(11025)
        writer.writeframes(pcm.tobytes())
    y, rate = decode_audio(buf.getvalue())
    assert rate == 11025
    np.testing.assert_allclose(y, pcm / 32767, atol=1e-7)


@pytest.mark.parametrize("extensible", [False, True])
def test_float_wav(extensible: bool) -> None:
    x = speech_like(500) * 1.5  # float WAVs may exceed full scale; clipping happens later
    data = make_wav(x.astype("<f4").tobytes(), tag=FLOAT, bits=32, extensible=extensible)
    y, rate = decode_audio(data)
    assert rate == 24000
    np.testing.assert_array_equal(y, x)


def test_mulaw_wav() -> None:
    y, rate = decode_audio(make_wav(b"\xff\x80\x00", tag=MULAW, bits=8, rate=8000))
    assert rate == 8000
    np.testing.assert_allclose(y, np.array([0, 32124, -32124]) / 32767, atol=1e-7)


def test_stereo_is_averaged_to_mono() -> None:
    left = np.array([1000, 2000, -400], dtype="<i2")
    right = np.array([3000, -2000, 0], dtype="<i2")
    interleaved = np.column_stack([left, right]).astype("<i2").tobytes()
    y, _ = decode_audio(make_wav(interleaved, channels=2))
    np.testing.assert_allclose(y, np.array([2000, 0, -200]) / 32767, atol=1e-7)


def test_skips_other_chunks_and_their_padding() -> None:
    odd_chunk = b"LIST" + struct.pack("<I", 3) + b"abc" + b"\x00"  # odd size, one pad byte
    pcm = np.array([5, -5, 300], dtype="<i2").tobytes()
    y, _ = decode_audio(make_wav(pcm, before_data=odd_chunk))
    np.testing.assert_allclose(y, np.array([5, -5, 300]) / 32767, atol=1e-7)


@pytest.mark.parametrize("placeholder", [0, 0xFFFFFFFF])
def test_streamed_wav_with_unknown_length_reads_to_the_end(placeholder: int) -> None:
    pcm = np.array([7, 8, 9, 10], dtype="<i2").tobytes()
    y, _ = decode_audio(make_wav(pcm, data_size=placeholder))
    assert len(y) == 4
    header_only, rate = decode_audio(make_wav(b"", data_size=placeholder, rate=22050))
    assert header_only.size == 0
    assert rate == 22050


def test_trailing_bytes_after_the_data_chunk_are_ignored() -> None:
    pcm = np.array([1, 2], dtype="<i2").tobytes()
    y, _ = decode_audio(make_wav(pcm) + b"junk")
    assert len(y) == 2


# --- errors --------------------------------------------------------------------------------------


def test_odd_s16le_length() -> None:
    with pytest.raises(AudioFormatError, match="odd length"):
        decode_audio(b"\x00\x01\x02", "s16le")


@pytest.mark.parametrize("fmt", [None, "f32le"])
def test_f32le_length_not_a_multiple_of_4(fmt: str | None) -> None:
    with pytest.raises(AudioFormatError, match="multiple of 4"):
        decode_audio(b"\x00" * 6, fmt)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_floats(bad: float) -> None:
    x = np.array([0.1, bad, 0.2], dtype="<f4")
    with pytest.raises(AudioFormatError, match="NaN or infinity"):
        decode_audio(x.tobytes())
    with pytest.raises(AudioFormatError, match="NaN or infinity"):
        decode_audio(make_wav(x.tobytes(), tag=FLOAT, bits=32))


def test_truncated_data_chunk() -> None:
    data = make_wav(b"\x00" * 100)[:-10]
    with pytest.raises(AudioFormatError, match="truncated WAV: data chunk declares 100 bytes"):
        decode_audio(data)


def test_partial_sample_frame() -> None:
    with pytest.raises(AudioFormatError, match="whole number of 4-byte frames"):
        decode_audio(make_wav(b"\x00" * 6, channels=2))


@pytest.mark.parametrize("cut", [12, 20, 30])
def test_header_cut_short(cut: int) -> None:
    with pytest.raises(AudioFormatError, match=r"truncated or malformed WAV|truncated fmt"):
        decode_audio(make_wav(b"\x00\x00")[:cut])


def test_missing_data_chunk() -> None:
    no_data = make_wav(b"")[:-8]  # drop the data chunk header
    with pytest.raises(AudioFormatError, match="no data chunk"):
        decode_audio(no_data)


def test_data_before_fmt() -> None:
    data = b"RIFF" + struct.pack("<I", 12) + b"WAVE" + b"data" + struct.pack("<I", 0)
    with pytest.raises(AudioFormatError, match="data chunk before fmt"):
        decode_audio(data)


def test_truncated_extensible_fmt() -> None:
    fmt_body = struct.pack("<HHIIHH", EXTENSIBLE, 1, 8000, 16000, 2, 16)
    data = (
        b"RIFF" + struct.pack("<I", 0) + b"WAVE"
        + b"fmt " + struct.pack("<I", len(fmt_body)) + fmt_body
        + b"data" + struct.pack("<I", 2) + b"\x00\x00"
    )  # fmt: skip
    with pytest.raises(AudioFormatError, match="extensible"):
        decode_audio(data)


@pytest.mark.parametrize(
    ("tag", "bits"), [(PCM, 8), (PCM, 24), (PCM, 32), (FLOAT, 64), (6, 8), (0x55, 16)]
)
def test_unsupported_wav_encoding(tag: int, bits: int) -> None:
    data = make_wav(b"\x00" * 24, tag=tag, bits=bits)
    with pytest.raises(AudioFormatError, match="unsupported WAV encoding"):
        decode_audio(data)


@pytest.mark.parametrize(
    ("channels", "rate", "block_align"), [(0, 8000, 2), (1, 0, 2), (1, 8000, 3)]
)
def test_inconsistent_wav_fields(channels: int, rate: int, block_align: int) -> None:
    data = make_wav(b"\x00" * 12, channels=channels, rate=rate, block_align=block_align)
    with pytest.raises(AudioFormatError, match="malformed WAV"):
        decode_audio(data)


def test_declared_wav_without_header() -> None:
    with pytest.raises(AudioFormatError, match="no RIFF/WAVE header"):
        decode_audio(b"\x00" * 8, "wav")


def test_unknown_format() -> None:
    with pytest.raises(AudioFormatError, match="unknown audio format 'mp3'"):
        decode_audio(b"\x00" * 8, "mp3")
    with pytest.raises(AudioFormatError, match="unknown audio format"):
        encode_audio(np.zeros(4, dtype=np.float32), 8000, "opus")


def test_bad_sample_rate() -> None:
    with pytest.raises(AudioFormatError, match="sample rate"):
        decode_audio(b"\x00" * 8, "f32le", -8000)
    with pytest.raises(ValueError, match="sample rate"):
        wav_bytes(np.zeros(4, dtype=np.float32), 0)


@pytest.mark.parametrize("rate", [1, 7999, 192_001, 10**9])
def test_declared_rates_outside_the_bound_are_refused_before_decoding(rate: int) -> None:
    # A 1 Hz declaration once cost 795 MiB of resampled audio for one 16 KB chunk.
    with pytest.raises(AudioFormatError, match="outside 8000-192000 Hz"):
        decode_audio(b"\x00" * 16384, "f32le", rate)
    with pytest.raises(AudioFormatError, match=r"WAV sample rate .* outside"):
        decode_audio(make_wav(b"\x00" * 16, rate=rate))


@pytest.mark.parametrize("rate", [8000, 192_000])
def test_declared_rates_at_the_bounds_decode(rate: int) -> None:
    assert decode_audio(b"\x00" * 8, "s16le", rate)[1] == rate
    assert decode_audio(make_wav(b"\x00" * 8, rate=rate))[1] == rate


def test_bytes_per_second_of_raw_payloads_and_none_for_wav() -> None:
    assert raw_bytes_per_second("ulaw", 8000) == 8000
    assert raw_bytes_per_second("s16le", 16000) == 32000
    assert raw_bytes_per_second("f32le", None) == 4 * 24000
    assert raw_bytes_per_second("", None) == 4 * 24000  # a seed server's raw float32
    assert raw_bytes_per_second("ulaw", None) == 8000
    assert raw_bytes_per_second("wav", 24000) is None
