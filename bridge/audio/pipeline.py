"""The outbound DSP path of an utterance: TTS float32 audio -> 8 kHz mu-law 20 ms frames."""

import numpy as np

from bridge.audio.framer import FRAME_BYTES, Framer
from bridge.audio.mulaw import lin2ulaw
from bridge.audio.resample import StreamResampler, float_to_pcm16

TELEPHONY_RATE = 8000


class TelephonyEncoder:
    """Resample -> int16 -> mu-law -> whole frames, with state carried across chunks.

    Feed an utterance with `process`, end it with `flush`; `reset` drops it (barge-in). After
    either the encoder is ready for the next utterance, whose input rate may differ.
    """

    def __init__(self, in_rate: int, frame_bytes: int = FRAME_BYTES) -> None:
        self._resampler = StreamResampler(in_rate, TELEPHONY_RATE)
        self._framer = Framer(frame_bytes)
        self._active = False  # inside an utterance: samples went in since the last flush/reset

    @property
    def in_rate(self) -> int:
        return self._resampler.in_rate

    @property
    def active(self) -> bool:
        """True between the first `process` of an utterance and its `flush`/`reset`."""
        return self._active

    def set_input_rate(self, rate: int) -> None:
        """Change the TTS rate; only between utterances, since it discards the filter state."""
        if rate == self._resampler.in_rate:
            return
        if self._active:
            raise RuntimeError("cannot change the input rate in the middle of an utterance")
        self._resampler = StreamResampler(rate, TELEPHONY_RATE)

    def process(self, samples: np.ndarray) -> bytes:
        """Encode the next chunk; returns whole frames only (possibly b"")."""
        if samples.size:
            self._active = True
        return self._encode(self._resampler.process(samples))

    def flush(self) -> bytes:
        """End the utterance: everything still held, the last frame padded with silence."""
        out = self._encode(self._resampler.flush()) + self._framer.flush()
        self._active = False
        return out

    def reset(self) -> None:
        """Drop all held audio without output (barge-in)."""
        self._resampler.reset()
        self._framer.reset()
        self._active = False

    def _encode(self, samples: np.ndarray) -> bytes:
        if not samples.size:
            return b""
        return self._framer.push(lin2ulaw(float_to_pcm16(samples)))
