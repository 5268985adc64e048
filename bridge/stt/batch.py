"""The shell shared by the backends that transcribe whole utterances (an HTTP transcription
endpoint, the offline decoder): it gathers each utterance (utterance_core.py), hands it to the
backend's `recognize` at the detector's endpoint, one at a time per call, and reports the
result.

Per call, one supervised worker takes utterances from a queue of `max_pending`; an utterance
that finds the queue full (the backend is slower than the caller talks) is dropped, never
waited for: `audio` and `speech_ended` run in the call's socket read and must return at once.
A recognizer that fails raises `SttError` with a fixed label. One failure, or one drop, loses
that utterance only (logged; the next is tried as usual, since a request that timed out once
may well succeed next time); MAX_FAILURES_IN_A_ROW of them with no success between mean the
backend is not working: `on_failure` hears the last label, once, and the transcriber stays
quiet from then on, as the contract (base.py) says.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog

from bridge.errors import BridgeError
from bridge.stt.base import OnFailure, OnTranscript, Transcript
from bridge.stt.utterance_core import DEFAULT_MAX_S, DEFAULT_PREROLL_S, Utterance, UtteranceBuffer
from bridge.supervisor import Supervisor

log = structlog.get_logger("bridge.stt")

DEFAULT_MAX_PENDING = 2  # utterances waiting per call, besides the one being transcribed
MAX_FAILURES_IN_A_ROW = 3


class SttError(BridgeError):
    """A transcription failed. `label` is the fixed reason handed to `on_failure` (timeout,
    http_status, bad_reply, unreachable, overloaded, decoder); the message says more, for the
    log, and never holds a credential."""

    def __init__(self, label: str, message: str) -> None:
        super().__init__(message)
        self.label = label


Recognize = Callable[[Utterance], Awaitable[str]]


class BatchTranscriber:
    """One call's transcriber for a backend whose `recognize` turns an utterance into text.
    Build it on the event loop (it starts its worker)."""

    def __init__(self, call_id: str, backend: str, recognize: Recognize,
                 on_transcript: OnTranscript, on_failure: OnFailure, *,
                 max_pending: int = DEFAULT_MAX_PENDING, preroll_s: float = DEFAULT_PREROLL_S,
                 max_s: float = DEFAULT_MAX_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log = log.bind(call_id=call_id, stt=backend)
        self._recognize = recognize
        self._on_transcript = on_transcript
        self._on_failure = on_failure
        self._clock = clock
        self._buffer = UtteranceBuffer(preroll_s=preroll_s, max_s=max_s)
        # Each with the clock reading at its endpoint, where its latency starts.
        self._queue: asyncio.Queue[tuple[Utterance, float]] = asyncio.Queue(max_pending)
        self._live = True  # False once closed or given up: no callbacks after
        self._failures = 0  # in a row
        self._supervisor = Supervisor(self._worker_failed)
        self._supervisor.spawn(f"stt-{backend}", self._run())

    def audio(self, mulaw: bytes) -> None:
        for utterance in self._buffer.audio(mulaw):
            self._submit(utterance)

    def speech_started(self, at_s: float) -> None:
        self._buffer.speech_started()

    def speech_ended(self, at_s: float) -> None:
        utterance = self._buffer.speech_ended()
        if utterance is not None:
            self._submit(utterance)

    async def aclose(self) -> None:
        self._live = False
        await self._supervisor.aclose()

    def _submit(self, utterance: Utterance) -> None:
        if not self._live:
            return
        try:
            self._queue.put_nowait((utterance, self._clock()))
        except asyncio.QueueFull:
            self._lost("overloaded", "the queue of utterances is full", utterance)

    async def _run(self) -> None:
        while True:
            utterance, ended_at = await self._queue.get()
            if not self._live:
                return  # given up: what still waits is not worth a request
            try:
                text = (await self._recognize(utterance)).strip()
            except SttError as exc:
                self._lost(exc.label, str(exc), utterance)
                continue
            self._failures = 0
            # Nothing recognized (a cough, a click): no transcript, nothing to tell.
            if text and self._live:
                latency = max(0.0, self._clock() - ended_at)
                self._on_transcript(Transcript(text, True, utterance.start_s, utterance.end_s,
                                               latency))

    def _lost(self, label: str, error: str, utterance: Utterance) -> None:
        self._failures += 1
        self._log.warning("stt_failed", reason=label, error=error, in_a_row=self._failures,
                          seconds=round(utterance.seconds, 2))
        if self._failures >= MAX_FAILURES_IN_A_ROW and self._live:
            self._log.error("stt_given_up", reason=label)
            self._live = False
            self._on_failure(label)

    def _worker_failed(self, name: str, exc: BaseException) -> None:
        # A bug, not a backend failure: said once with its reason, and the call goes on
        # without transcripts.
        self._log.error("stt_worker_failed", part=name, error=repr(exc))
        if self._live:
            self._live = False
            self._on_failure("internal")
