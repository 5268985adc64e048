"""Cuts a byte stream into fixed-size frames (20 ms of 8 kHz mu-law by default)."""

from bridge.audio.mulaw import ULAW_SILENCE

FRAME_BYTES = 160  # 20 ms at 8,000 one-byte samples per second


class Framer:
    """Hands out whole frames and keeps the remainder for the next push."""

    def __init__(self, frame_bytes: int = FRAME_BYTES) -> None:
        if frame_bytes <= 0:
            raise ValueError(f"frame_bytes must be positive, got {frame_bytes}")
        self._frame_bytes = frame_bytes
        self._buf = bytearray()

    @property
    def frame_bytes(self) -> int:
        return self._frame_bytes

    @property
    def pending(self) -> int:
        """Bytes held back, always fewer than one frame."""
        return len(self._buf)

    def push(self, data: bytes | bytearray) -> bytes:
        """Add bytes; return every whole frame now available (possibly b"")."""
        if not self._buf and len(data) % self._frame_bytes == 0:
            return bytes(data)  # common case for aligned input: no buffer round trip
        self._buf += data
        whole = len(self._buf) - len(self._buf) % self._frame_bytes
        out = bytes(self._buf[:whole])
        del self._buf[:whole]
        return out

    def flush(self) -> bytes:
        """Return the remainder padded with mu-law silence to one frame (b"" if none)."""
        if not self._buf:
            return b""
        out = bytes(self._buf) + bytes([ULAW_SILENCE]) * (self._frame_bytes - len(self._buf))
        self._buf.clear()
        return out

    def reset(self) -> None:
        """Drop the remainder (barge-in)."""
        self._buf.clear()
