"""TTS payload formats: raw f32le / s16le / mu-law and WAV, to and from float32 mono samples.

WAV is parsed here with `struct` because the stdlib `wave` module rejects float WAVs, which
TTS servers commonly send.
"""

import struct

import numpy as np

from bridge.audio.mulaw import lin2ulaw, ulaw2lin
from bridge.audio.resample import float_to_pcm16, pcm16_to_float
from bridge.errors import AudioFormatError

FORMATS = ("f32le", "s16le", "wav", "ulaw")

DEFAULT_RATE = 24000  # the SILMA server's raw output: float32 at 24 kHz
ULAW_RATE = 8000  # raw mu-law is telephone audio unless told otherwise
# Rates a payload may declare (argument or WAV header). Decoded audio is resampled to 8 kHz
# for the phone, so a tiny rate is a huge upsampling: a 1 Hz declaration once turned a 16 KB
# chunk into 795 MiB. 8 kHz is telephone audio; 192 kHz is the highest studio rate, the same
# bound the voice-clip upload applies.
MIN_RATE = 8000
MAX_RATE = 192_000

_WAVE_PCM = 0x0001
_WAVE_FLOAT = 0x0003
_WAVE_MULAW = 0x0007
_WAVE_EXTENSIBLE = 0xFFFE
_WAV_ENCODINGS = {(_WAVE_PCM, 16), (_WAVE_FLOAT, 32), (_WAVE_MULAW, 8)}  # (format tag, bits)
# A streaming writer cannot know the length up front and leaves one of these in the data chunk.
_UNKNOWN_SIZES = (0, 0xFFFFFFFF)
_HEADER = struct.Struct("<4sI4s4sIHHIIHH4sI")  # RIFF header + 16-byte fmt chunk + data header


def is_wav(data: bytes) -> bool:
    """True when the payload starts with a RIFF/WAVE header."""
    return len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WAVE"


_SAMPLE_BYTES = {"f32le": 4, "s16le": 2, "ulaw": 1}


def raw_bytes_per_second(fmt: str | None, sample_rate: int | None) -> int | None:
    """What one second of a raw payload of `fmt` (f32le when None or "") at `sample_rate`
    (decode_audio's defaults) takes in bytes; None for WAV, whose bytes are not all samples."""
    kind = fmt or "f32le"
    if kind not in _SAMPLE_BYTES:
        return None
    return _SAMPLE_BYTES[kind] * (sample_rate or (ULAW_RATE if kind == "ulaw" else DEFAULT_RATE))


def decode_audio(
    data: bytes, fmt: str | None = None, sample_rate: int | None = None
) -> tuple[np.ndarray, int]:
    """Decode a TTS payload to (float32 mono samples, sample rate).

    A RIFF/WAVE payload is parsed as WAV whatever `fmt` says and its header gives the rate.
    Otherwise `fmt` names the raw encoding (f32le when None or "") at `sample_rate`, which
    defaults to 24 kHz (8 kHz for ulaw).
    """
    kind = _check_format(fmt) if fmt else None
    if is_wav(data):
        return _decode_wav(data)
    if sample_rate is not None and sample_rate <= 0:
        raise AudioFormatError(f"sample rate must be positive, got {sample_rate}")
    if sample_rate and not MIN_RATE <= sample_rate <= MAX_RATE:
        raise AudioFormatError(f"sample rate {sample_rate} Hz is outside {MIN_RATE}-{MAX_RATE} Hz")
    rate = sample_rate or (ULAW_RATE if kind == "ulaw" else DEFAULT_RATE)
    if not data:
        return np.zeros(0, dtype=np.float32), rate
    if kind == "wav":
        raise AudioFormatError("payload declared as WAV has no RIFF/WAVE header")
    if kind == "s16le":
        if len(data) % 2:
            raise AudioFormatError(f"s16le payload has an odd length ({len(data)} bytes)")
        return pcm16_to_float(np.frombuffer(data, dtype="<i2")), rate
    if kind == "ulaw":
        return pcm16_to_float(ulaw2lin(data)), rate
    if len(data) % 4:
        raise AudioFormatError(f"f32le payload length {len(data)} is not a multiple of 4 bytes")
    return _finite(np.frombuffer(data, dtype="<f4").astype(np.float32)), rate


def encode_audio(samples: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    """Encode float32 mono samples; `sample_rate` only goes into a WAV header (no resampling)."""
    kind = _check_format(fmt)
    if kind == "wav":
        return wav_bytes(samples, sample_rate)
    if kind == "f32le":
        return np.asarray(samples, dtype="<f4").tobytes()
    pcm = float_to_pcm16(samples)
    if kind == "ulaw":
        return lin2ulaw(pcm)
    return pcm.astype("<i2", copy=False).tobytes()


def wav_bytes(samples_f32: np.ndarray, sample_rate: int) -> bytes:
    """A complete 16-bit PCM mono WAV file."""
    if sample_rate <= 0:
        raise ValueError(f"sample rate must be positive, got {sample_rate}")
    pcm = float_to_pcm16(samples_f32).astype("<i2", copy=False).tobytes()
    header = _HEADER.pack(
        b"RIFF", 36 + len(pcm), b"WAVE",
        b"fmt ", 16, _WAVE_PCM, 1, sample_rate, sample_rate * 2, 2, 16,
        b"data", len(pcm),
    )  # fmt: skip
    return header + pcm


def _check_format(fmt: str) -> str:
    kind = fmt.strip().lower()
    if kind not in FORMATS:
        raise AudioFormatError(f"unknown audio format {fmt!r}; expected one of {FORMATS}")
    return kind


def _finite(samples: np.ndarray) -> np.ndarray:
    if not np.isfinite(samples).all():
        raise AudioFormatError("float audio contains NaN or infinity")
    return samples


def _decode_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Parse a mono or multichannel WAV (PCM16, float32, mu-law); channels are averaged."""
    fmt_chunk: tuple[int, int, int, int, int] | None = None
    pos = 12
    while pos + 8 <= len(data):
        chunk_id, size = struct.unpack_from("<4sI", data, pos)
        body = pos + 8
        if chunk_id == b"fmt ":
            if size < 16 or body + size > len(data):
                raise AudioFormatError("malformed WAV: truncated fmt chunk")
            fmt_chunk = struct.unpack_from("<HHIxxxxHH", data, body)
            if fmt_chunk[0] == _WAVE_EXTENSIBLE:
                # The real encoding is the first two bytes of the SubFormat GUID.
                if size < 40:
                    raise AudioFormatError("malformed WAV: truncated extensible fmt chunk")
                (sub_tag,) = struct.unpack_from("<H", data, body + 24)
                fmt_chunk = (sub_tag, *fmt_chunk[1:])
        elif chunk_id == b"data":
            if fmt_chunk is None:
                raise AudioFormatError("malformed WAV: data chunk before fmt chunk")
            end = body + size
            if size in _UNKNOWN_SIZES:
                end = len(data)
            elif end > len(data):
                raise AudioFormatError(
                    f"truncated WAV: data chunk declares {size} bytes, {len(data) - body} present"
                )
            return _wav_samples(data[body:end], *fmt_chunk)
        pos = body + size + (size & 1)  # chunks are padded to an even length
    missing = "data" if fmt_chunk else "fmt"
    raise AudioFormatError(f"truncated or malformed WAV: no {missing} chunk")


def _wav_samples(
    payload: bytes, tag: int, channels: int, rate: int, block_align: int, bits: int
) -> tuple[np.ndarray, int]:
    if (tag, bits) not in _WAV_ENCODINGS:
        raise AudioFormatError(
            f"unsupported WAV encoding: format tag {tag:#06x} with {bits} bits per sample "
            "(supported: 16-bit PCM, 32-bit float, 8-bit mu-law)"
        )
    if channels < 1 or rate <= 0 or block_align != channels * bits // 8:
        raise AudioFormatError(
            f"malformed WAV: {channels} channels, {rate} Hz, block align {block_align}"
        )
    if not MIN_RATE <= rate <= MAX_RATE:
        raise AudioFormatError(f"WAV sample rate {rate} Hz is outside {MIN_RATE}-{MAX_RATE} Hz")
    if len(payload) % block_align:
        raise AudioFormatError(
            f"truncated WAV: {len(payload)} data bytes is not a whole number of "
            f"{block_align}-byte frames"
        )
    if tag == _WAVE_PCM:
        samples = pcm16_to_float(np.frombuffer(payload, dtype="<i2"))
    elif tag == _WAVE_MULAW:
        samples = pcm16_to_float(ulaw2lin(payload))
    else:
        samples = _finite(np.frombuffer(payload, dtype="<f4").astype(np.float32))
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1, dtype=np.float32)
    return samples, rate
