"""Streaming resampling (soxr, HQ) and float <-> int16 sample conversion.

One StreamResampler per utterance stream: its filter state spans chunk boundaries, so chunked
input gives the same output as one block (stateless per-chunk resampling clicks at the edges).
It is reset explicitly (flush at the end of an utterance, reset on barge-in), never by a timer.
"""

import numpy as np
import soxr

# 32767 both ways, so int16 -> float -> int16 is exact (32768 would shift full-scale values by one).
_PCM16_SCALE = 32767.0
# 0-d float32 arrays: ufuncs skip the Python-scalar conversion, which shows on 20 ms chunks.
_SCALE = np.array(_PCM16_SCALE, dtype=np.float32)
_HI = np.array(32767.0, dtype=np.float32)
_LO = np.array(-32768.0, dtype=np.float32)
_EMPTY = np.zeros(0, dtype=np.float32)


class StreamResampler:
    """Resamples one float32 mono stream chunk by chunk.

    soxr holds back ~80 ms of input before its first output, so `process` may return an empty
    array early in an utterance; `flush` hands out what is held.
    """

    def __init__(self, in_rate: int, out_rate: int) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        self._in_rate = in_rate
        self._out_rate = out_rate
        self._stream: soxr.ResampleStream | None = None
        if in_rate != out_rate:
            self._stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality="HQ")

    @property
    def in_rate(self) -> int:
        return self._in_rate

    @property
    def out_rate(self) -> int:
        return self._out_rate

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Resample the next chunk of the stream; the result may be shorter than the ratio says."""
        x = np.ascontiguousarray(samples, dtype=np.float32)
        if x.ndim != 1:
            raise ValueError(f"expected mono 1-D samples, got shape {x.shape}")
        if self._stream is None:
            return x
        out: np.ndarray = self._stream.resample_chunk(x)  # soxr's stream methods are untyped
        return out

    def flush(self) -> np.ndarray:
        """End the stream: return the held tail and get ready for a new stream."""
        if self._stream is None:
            return _EMPTY
        tail: np.ndarray = self._stream.resample_chunk(_EMPTY, last=True)
        self._stream.clear()
        return tail

    def reset(self) -> None:
        """Drop the held samples without output (barge-in)."""
        if self._stream is not None:
            self._stream.clear()


def float_to_pcm16(samples: np.ndarray) -> np.ndarray:
    """float [-1, 1] -> int16, rounding to nearest and clipping what lies outside."""
    # numpy types a ufunc called with dtype= as Any.
    scaled: np.ndarray = np.multiply(samples, _SCALE, dtype=np.float32)
    np.rint(scaled, out=scaled)
    # minimum/maximum with out= avoid np.clip's Python-level overhead on small chunks.
    np.minimum(scaled, _HI, out=scaled)
    np.maximum(scaled, _LO, out=scaled)
    return scaled.astype(np.int16)


def pcm16_to_float(pcm: np.ndarray) -> np.ndarray:
    """int16 -> float32 in [-1, 1] (-32768 maps just below -1)."""
    samples: np.ndarray = np.divide(pcm, _PCM16_SCALE, dtype=np.float32)  # Any to numpy's types
    return samples
