import random

import pytest

from bridge.audio.framer import FRAME_BYTES, Framer


def test_frame_is_20_ms_of_8_khz_ulaw() -> None:
    assert FRAME_BYTES == 160
    assert Framer().frame_bytes == 160


def test_holds_partial_frames() -> None:
    framer = Framer()
    assert framer.push(b"\x01" * 100) == b""
    assert framer.pending == 100
    out = framer.push(b"\x02" * 100)
    assert out == b"\x01" * 100 + b"\x02" * 60
    assert framer.pending == 40


def test_returns_every_whole_frame_at_once() -> None:
    framer = Framer()
    data = bytes(range(256)) * 2  # 512 bytes: 3 frames + 32
    assert framer.push(data) == data[:480]
    assert framer.pending == 32
    assert framer.flush()[:32] == data[480:]


def test_aligned_push_passes_through() -> None:
    framer = Framer()
    data = b"\x05" * 320
    out = framer.push(data)
    assert out == data
    assert isinstance(out, bytes)
    assert framer.pending == 0
    assert framer.push(bytearray(b"\x06" * 160)) == b"\x06" * 160


def test_flush_pads_with_ulaw_silence() -> None:
    framer = Framer()
    framer.push(b"\x00" * 170)
    out = framer.flush()
    assert out == b"\x00" * 10 + b"\xff" * 150
    assert framer.pending == 0
    assert framer.flush() == b""


def test_flush_when_nothing_is_pending() -> None:
    framer = Framer()
    assert framer.flush() == b""
    framer.push(b"\x00" * 160)
    assert framer.flush() == b""


def test_reset_drops_pending() -> None:
    framer = Framer()
    framer.push(b"\x01" * 50)
    framer.reset()
    assert framer.pending == 0
    assert framer.flush() == b""
    assert framer.push(b"\x02" * 160) == b"\x02" * 160


def test_random_splits_reassemble_the_stream() -> None:
    rng = random.Random(7)
    data = bytes(rng.randrange(256) for _ in range(5000))
    framer = Framer()
    out = bytearray()
    i = 0
    while i < len(data):
        n = rng.randrange(0, 400)
        chunk = framer.push(data[i : i + n])
        assert len(chunk) % 160 == 0
        out += chunk
        i += n
    out += framer.flush()
    assert len(out) == 5120
    assert bytes(out) == data + b"\xff" * 120


def test_custom_frame_size() -> None:
    framer = Framer(frame_bytes=320)
    assert framer.push(b"\x00" * 400) == b"\x00" * 320
    assert len(framer.flush()) == 320


@pytest.mark.parametrize("size", [0, -160])
def test_rejects_bad_frame_size(size: int) -> None:
    with pytest.raises(ValueError, match="frame_bytes"):
        Framer(size)
