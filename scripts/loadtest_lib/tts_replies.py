"""The TTS stand-in's replies, pre-rendered: each request's messages built once per distinct
request, then sent on the sim engine's schedule with only the request id spliced in.

Pure: the schedule and the bytes. tts_standin.py renders the audio (with the sim engine
itself) and serves it; tests/unit/test_loadtest_tts_replies.py checks every message here is
byte for byte what bridge/silma/protocol.py builds, and the schedule the sim engine's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from bridge.silma.protocol import (
    AudioChunk,
    SynthesisComplete,
    build_audio_chunk,
    build_complete,
)


def ready_offsets(sizes: Sequence[int], rate: int, first_audio_s: float, rtf: float) -> list[float]:
    """When each engine chunk of `sizes` samples is ready, in seconds after the request
    started: the sim engine's latency model (bridge/tts_server/engines/sim.py), the first after
    `first_audio_s`, each further one when `rtf` times the audio already produced has passed."""
    offsets = []
    produced = 0
    for n in sizes:
        offsets.append(first_audio_s + rtf * produced / rate)
        produced += n
    return offsets


class IdSplice:
    """A message whose last field is the request's id (protocol._with_id puts it last):
    built once without it, then `with_id` appends it: one bytes concatenation a send."""

    def __init__(self, without_id: bytes) -> None:
        if not without_id.endswith(b"}"):
            raise ValueError("not a JSON object")
        self._head = without_id[:-1]
        self._empty = self._head.endswith(b"{")

    def with_id(self, request_id: str | None) -> bytes:
        if request_id is None:
            return self._head + b"}"
        sep = b"" if self._empty else b","
        return self._head + sep + b'"id":' + orjson.dumps(request_id) + b"}"


@dataclass(frozen=True)
class Reply:
    """Everything one request is answered with, but its id. `chunks`: (seconds after the
    request started, the audio_chunk message); `complete`: the synthesis_complete message, due
    with the last chunk (a streamed reply's carries no audio, a whole one's all of it)."""

    chunks: tuple[tuple[float, IdSplice], ...]
    complete: IdSplice
    done_s: float


def build_reply(pieces: Sequence[tuple[float, bytes]], fmt: str, rate: int, *,
                whole: bytes | None = None) -> Reply:
    """The reply of a request whose encoded audio `pieces` are (ready after s, bytes) in order,
    in format `fmt` at `rate`: what bridge/tts_server/service.py sends for it. `whole`: the
    audio encoded in one piece, for a request that did not ask for a stream (a WAV is one file
    then, not one per chunk); None for a streamed one."""
    done = pieces[-1][0] if pieces else 0.0
    chunks: tuple[tuple[float, IdSplice], ...] = ()
    if whole is None:
        chunks = tuple(
            (at, IdSplice(build_audio_chunk(AudioChunk(None, seq, data, fmt, rate))))
            for seq, (at, data) in enumerate(pieces)
        )
        complete = IdSplice(build_complete(SynthesisComplete(None, b"", fmt, rate,
                                                             chunks=len(pieces))))
    else:
        complete = IdSplice(build_complete(SynthesisComplete(None, whole, fmt, rate)))
    return Reply(chunks, complete, done)
