"""G.711 mu-law, bit-exact with the stdlib ``audioop`` (width 2) on every input.

Both directions are table lookups built once at import: 65,536 entries for encoding (one per
int16 value) and 256 for decoding.
"""

import numpy as np

ULAW_SILENCE = 0xFF  # mu-law code of 0: what a padded frame or an idle line carries

_BIAS = 0x84
_CLIP = 8159  # largest 14-bit magnitude before the bias is added
# Segment upper bounds of the biased 14-bit magnitude (G.711 mu-law segment ends).
_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)


def _build_encode_table() -> np.ndarray:
    """Mu-law code for each int16 value, indexed by the value's uint16 bit pattern."""
    pcm = np.arange(-32768, 32768, dtype=np.int32)
    # audioop drops the two low bits with an arithmetic shift, so negative samples round toward
    # minus infinity (-1 -> -1, not 0): the usual bias-0x84 formula on 16 bits misses this.
    val = pcm >> 2
    negative = val < 0
    mag = np.minimum(np.where(negative, -val, val), _CLIP) + (_BIAS >> 2)
    seg = np.searchsorted(_SEG_END, mag)  # first segment whose end is >= mag
    code = (seg << 4) | ((mag >> (seg + 1)) & 0x0F)
    code = np.where(seg >= 8, 0x7F, code)  # the clipped maximum overflows the last segment
    ulaw = code ^ np.where(negative, 0x7F, 0xFF)
    table = np.empty(65536, dtype=np.uint8)
    table[pcm.astype(np.int16).view(np.uint16)] = ulaw
    return table


def _build_decode_table() -> np.ndarray:
    """int16 value of each mu-law code."""
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + _BIAS) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, _BIAS - t, t - _BIAS).astype(np.int16)


_ENCODE = _build_encode_table()
_DECODE = _build_decode_table()


def lin2ulaw(pcm: np.ndarray) -> bytes:
    """Encode int16 samples as mu-law bytes (one byte per sample)."""
    if pcm.dtype != np.int16:
        raise TypeError(f"lin2ulaw expects int16 samples, got {pcm.dtype}")
    return _ENCODE.take(pcm.view(np.uint16)).tobytes()


def ulaw2lin(data: bytes | bytearray | memoryview) -> np.ndarray:
    """Decode mu-law bytes to int16 samples (a new, writable array)."""
    return _DECODE.take(np.frombuffer(data, dtype=np.uint8))
