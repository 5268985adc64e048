"""Registered voices on one connection, the decisions only (pure: no I/O, no clock).

A server announcing `voice` takes the reference clip once (`register_voice`) and is named by id
afterwards; without it, every request carries the clip inline. A voice is keyed by a digest of
its clip and transcript, so the registry holds no copy of a clip (a 7 s clip is ~450 kB).

The registry belongs to one connection, and a connection to one pool (one endpoint and
credential): an id one tenant's server handed out is never sent to another tenant's server.
What the server returns is untrusted: an id is checked before it is kept or sent.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
from collections.abc import Container

from bridge.errors import TTSReplyError
from bridge.silma import protocol as p

# Voice ids one connection keeps: a pool's connection serves its tenant's few voices; the bound
# only stops a stream of distinct clips from growing the map (64 short strings).
MAX_VOICES_PER_CONNECTION = 64


def voice_key(request: p.SynthesizeRequest) -> str | None:
    """The digest naming the request's voice, None when it carries no clip (server default)."""
    if not request.reference_audio:
        return None
    # Length-prefixed, so no clip/transcript split of the same bytes gives the same digest.
    digest = hashlib.sha256(len(request.reference_audio).to_bytes(8, "big"))
    digest.update(request.reference_audio)
    digest.update(request.reference_text.encode())
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True, slots=True)
class Inline:
    """Send the request as it is: no clip, or a server without registration."""


@dataclasses.dataclass(frozen=True, slots=True)
class UseId:
    """The voice is registered here: send its id instead of the clip."""

    voice_id: str


@dataclasses.dataclass(frozen=True, slots=True)
class Register:
    """Nobody has registered this voice here yet: register it, then decide again."""

    key: str


@dataclasses.dataclass(frozen=True, slots=True)
class Await:
    """Another request is registering this voice here: wait for it, then decide again."""

    key: str


Step = Inline | UseId | Register | Await


def valid_voice_id(raw: str) -> str:
    """A server's voice id, or TTSReplyError: it goes back on the wire and into logs, so only
    1-MAX_VOICE_ID_CHARS printable ASCII characters without spaces are used."""
    if not 0 < len(raw) <= p.MAX_VOICE_ID_CHARS or not raw.isascii() or not raw.isprintable() \
            or " " in raw:
        raise TTSReplyError(f"TTS server registered the voice under an unusable id "
                            f"{raw[:40]!r}: want 1-{p.MAX_VOICE_ID_CHARS} printable ASCII "
                            "characters without spaces")
    return raw


class VoiceRegistry:
    """The voice ids one connection's server has given, by voice key."""

    def __init__(self, capacity: int = MAX_VOICES_PER_CONNECTION) -> None:
        self._ids: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._capacity = capacity

    def __len__(self) -> int:
        return len(self._ids)

    def plan(self, can_register: bool, key: str | None, registering: Container[str]) -> Step:
        """What to do before sending a request whose voice is `key` (voice_key)."""
        if key is None or not can_register:
            return Inline()
        voice_id = self._ids.get(key)
        if voice_id is not None:
            self._ids.move_to_end(key)
            return UseId(voice_id)
        return Await(key) if key in registering else Register(key)

    def registered(self, key: str, voice_id: str) -> str:
        """Keep the id the server returned (validated first); the least recently used id goes
        past the capacity (a request naming it would register again)."""
        self._ids[key] = valid_voice_id(voice_id)
        self._ids.move_to_end(key)
        while len(self._ids) > self._capacity:
            self._ids.popitem(last=False)
        return voice_id

    def unknown_voice(self, code: str | None, key: str | None, sent: p.SynthesizeRequest,
                      *, yielded: bool, retried: bool) -> bool:
        """Whether an error reply's `code` says the server forgot the voice `sent` named
        (evicted, restarted) and the request is to be registered again and resent; then the id
        is dropped.
        Once per request, and only before any audio reached the caller: audio already heard
        cannot be taken back, and a server forgetting twice is not chased."""
        if code != "unknown_voice" or key is None or sent.voice_id is None or yielded \
                or retried:
            return False
        # Dropped only if it is still the id kept: another request may have registered the
        # voice again meanwhile.
        if self._ids.get(key) == sent.voice_id:
            del self._ids[key]
        return True


def with_voice_id(request: p.SynthesizeRequest, voice_id: str) -> p.SynthesizeRequest:
    """The request naming a registered voice instead of carrying the clip."""
    return dataclasses.replace(request, reference_audio=b"", reference_text="",
                               voice_id=voice_id)
