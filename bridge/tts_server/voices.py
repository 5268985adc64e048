"""Registered voices: a client sends a reference clip once and names it by id afterwards.

Saves re-sending (and re-decoding) the clip with every request: a few hundred kB of base64 per
request for an 8 s clip. The id is a hash of the clip and its transcript, so registering the
same clip again (another socket, a reconnect) gives the same id. Least recently used voices are
forgotten beyond `capacity`; a request naming a forgotten id gets "unknown_voice" and the
client registers again.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib

import numpy as np

from bridge.audio.codec import decode_audio
from bridge.errors import AudioFormatError
from bridge.silma.protocol import RequestError

MAX_VOICE_S = 30.0  # bounds the store's memory; engines use the first seconds anyway
MAX_REFERENCE_PEAK = 2.0  # decoded float audio far beyond full scale is not audio (e.g. text)


@dataclasses.dataclass(frozen=True, slots=True)
class StoredVoice:
    audio: np.ndarray  # float32 mono, decoded and validated
    rate: int
    text: str


def decode_clip(data: bytes) -> tuple[np.ndarray, int]:
    """A reference clip (WAV, else raw float32) as float32 mono and its rate; AudioFormatError
    when it is none, is empty, or is far beyond full scale."""
    try:
        reference, rate = decode_audio(data)
    except AudioFormatError as exc:
        raise AudioFormatError(f"audio is not a WAV or raw float32 clip: {exc}") from exc
    if not reference.size or float(np.max(np.abs(reference))) > MAX_REFERENCE_PEAK:
        raise AudioFormatError("audio does not decode to a WAV or raw float32 clip")
    return reference, rate


class UnknownVoice(RequestError):
    """No voice is registered under this id (never, or forgotten since): register it again."""


class VoiceStore:
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("max_voices must be at least 1")
        self.capacity = capacity
        self._voices: collections.OrderedDict[str, StoredVoice] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._voices)

    @staticmethod
    def voice_id(clip: bytes, text: str) -> str:
        digest = hashlib.sha256(clip)
        digest.update(b"\0" + text.encode())
        return digest.hexdigest()[:32]

    def add(self, voice_id: str, voice: StoredVoice) -> None:
        self._voices[voice_id] = voice
        self._voices.move_to_end(voice_id)
        while len(self._voices) > self.capacity:
            self._voices.popitem(last=False)

    def get(self, voice_id: str, request_id: str | None = None) -> StoredVoice:
        try:
            voice = self._voices[voice_id]
        except KeyError:
            raise UnknownVoice(
                f"voice_id {voice_id!r} is not registered here (any more): register it again",
                request_id,
            ) from None
        self._voices.move_to_end(voice_id)
        return voice
