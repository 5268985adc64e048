import warnings

import numpy as np
import pytest

from bridge.audio.mulaw import ULAW_SILENCE, lin2ulaw, ulaw2lin

with warnings.catch_warnings():
    # The stdlib module (3.11, 3.12) warns of its removal; audioop-lts provides it on 3.13+.
    warnings.simplefilter("ignore", DeprecationWarning)
    audioop = pytest.importorskip("audioop")

ALL_PCM = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = bytes(range(256))


def test_lin2ulaw_matches_audioop_on_every_int16() -> None:
    ours = np.frombuffer(lin2ulaw(ALL_PCM), dtype=np.uint8)
    reference = np.frombuffer(audioop.lin2ulaw(ALL_PCM.tobytes(), 2), dtype=np.uint8)
    mismatches = np.flatnonzero(ours != reference)
    assert mismatches.size == 0, f"first mismatching inputs: {ALL_PCM[mismatches[:5]]}"


def test_ulaw2lin_matches_audioop_on_every_code() -> None:
    reference = np.frombuffer(audioop.ulaw2lin(ALL_CODES, 2), dtype=np.int16)
    np.testing.assert_array_equal(ulaw2lin(ALL_CODES), reference)


def test_negative_samples_round_like_audioop() -> None:
    # The values the common bias-0x84 formula gets wrong sit just below zero and at segment
    # edges; spot-check a few against audioop so a regression names them.
    pcm = np.array([-1, -2, -3, -4, -5, -32768, -32767, -8159 * 4], dtype=np.int16)
    assert lin2ulaw(pcm) == audioop.lin2ulaw(pcm.tobytes(), 2)


def test_silence() -> None:
    assert lin2ulaw(np.zeros(3, dtype=np.int16)) == bytes([ULAW_SILENCE]) * 3
    assert ulaw2lin(bytes([ULAW_SILENCE])).tolist() == [0]


def test_decode_then_encode_is_identity_except_negative_zero() -> None:
    again = lin2ulaw(ulaw2lin(ALL_CODES))
    expected = bytearray(ALL_CODES)
    expected[0x7F] = 0xFF  # 0x7F is "-0": it decodes to 0, which encodes as 0xFF
    assert again == bytes(expected)


def test_accepts_strided_and_empty_input() -> None:
    pcm = np.array([100, -7, 2000, -30000], dtype=np.int16)
    assert lin2ulaw(pcm[::2]) == lin2ulaw(np.array([100, 2000], dtype=np.int16))
    assert lin2ulaw(np.zeros(0, dtype=np.int16)) == b""
    assert ulaw2lin(b"").dtype == np.int16
    assert ulaw2lin(b"").size == 0


def test_ulaw2lin_returns_a_writable_copy() -> None:
    pcm = ulaw2lin(bytearray(b"\x00\x80"))
    pcm[0] = 1  # callers may scale in place
    assert pcm.dtype == np.int16


def test_rejects_other_dtypes() -> None:
    with pytest.raises(TypeError, match="int16"):
        lin2ulaw(np.zeros(4, dtype=np.float32))
    with pytest.raises(TypeError, match="int16"):
        lin2ulaw(np.zeros(4, dtype=np.int32))
