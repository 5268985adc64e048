"""Offline English speech-to-text with PocketSphinx: for development, tests and calls that
must not leave the machine. The model is the US English one inside the `pocketsphinx` wheel
(`pip install '.[stt]'`), so nothing is ever downloaded.

That model is trained on 16 kHz audio (its feat.params: 25 mel filters up to 6800 Hz), and a
decoder configured for 8 kHz with it fails to initialize, so each utterance is decoded from
the caller's 8 kHz mu-law upsampled to 16 kHz (soxr HQ, the project's resampler). The band
above 4 kHz is empty, as on any phone line; on Piper's speech through mu-law this still got
87% of the words of ten assorted sentences and 97% of those of the eight that
tests/integration/test_stt_pocketsphinx.py checks.

Decoding is CPU work in C: it runs in the backend's own worker threads (`workers`, shared by
every call), each with its own Decoder (one costs ~90 MB and ~0.3 s to load; the first is
loaded when the backend is built, so the first utterance does not pay for it). Decodes in
flight, running or waiting for a worker, are bounded (`max_waiting`) over all calls; past it
an utterance is refused as `overloaded` rather than queued without end.
"""

from __future__ import annotations

import asyncio
import queue
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pocketsphinx
import structlog

from bridge.audio.mulaw import ulaw2lin
from bridge.audio.resample import StreamResampler, float_to_pcm16, pcm16_to_float
from bridge.stt.base import OnFailure, OnTranscript, Transcriber
from bridge.stt.batch import BatchTranscriber, SttError
from bridge.stt.utterance_core import SAMPLE_RATE, Utterance

log = structlog.get_logger("bridge.stt")

MODEL_RATE = 16000


class PocketsphinxStt:
    name = "pocketsphinx"

    def __init__(self, *, workers: int = 1, max_waiting: int = 8) -> None:
        if workers < 1 or max_waiting < 1:
            raise ValueError(f"need workers >= 1 and max_waiting >= 1, got {workers}, "
                             f"{max_waiting}")
        self._executor = ThreadPoolExecutor(max_workers=workers,
                                            thread_name_prefix="pocketsphinx")
        # Idle decoders; a worker that finds none loads one, so there are at most `workers`.
        self._decoders: queue.SimpleQueue[pocketsphinx.Decoder] = queue.SimpleQueue()
        self._max_waiting = max_waiting
        self._in_flight = 0
        self._executor.submit(self._load_one).add_done_callback(_log_load_failure)

    def open(self, call_id: str, on_transcript: OnTranscript,
             on_failure: OnFailure) -> Transcriber:
        return BatchTranscriber(call_id, self.name, self.recognize, on_transcript, on_failure)

    async def recognize(self, utterance: Utterance) -> str:
        """The words of one utterance (lower case, no punctuation; "" when none)."""
        if not utterance.mulaw:
            return ""  # pocketsphinx raises IndexError on an empty block
        if self._in_flight >= self._max_waiting:
            raise SttError("overloaded", f"{self._in_flight} decodes already wait")
        self._in_flight += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, self._decode, utterance.mulaw)
        except RuntimeError as exc:  # pocketsphinx's own failures, the model's load included
            raise SttError("decoder", f"pocketsphinx failed: {exc}") from exc
        finally:
            self._in_flight -= 1

    async def aclose(self) -> None:
        # A decode still running finishes in its thread; nobody waits for its result.
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- in the worker threads ---------------------------------------------------------------
    def _load_one(self) -> None:
        self._decoders.put(_new_decoder())

    def _decode(self, mulaw: bytes) -> str:
        try:
            decoder = self._decoders.get_nowait()
        except queue.Empty:
            decoder = _new_decoder()
        pcm = _to_model_rate(ulaw2lin(mulaw))
        decoder.start_utt()
        # full_utt: the whole utterance is here, so cepstral mean normalization uses all of it.
        decoder.process_raw(pcm.tobytes(), False, True)
        decoder.end_utt()
        hyp = decoder.hyp()
        # Only a decoder that got through is reused: one that raised may be mid-utterance.
        self._decoders.put(decoder)
        return str(hyp.hypstr) if hyp is not None else ""


def _log_load_failure(loaded: Future[None]) -> None:
    # Said at startup; each decode then tries to load again and fails with the reason too.
    if not loaded.cancelled() and (exc := loaded.exception()) is not None:
        log.error("stt_model_load_failed", stt="pocketsphinx", error=repr(exc))


def _new_decoder() -> pocketsphinx.Decoder:
    # FATAL: an utterance with no words logs an ERROR line per decode on stderr otherwise.
    return pocketsphinx.Decoder(loglevel="FATAL")


def _to_model_rate(pcm: np.ndarray) -> np.ndarray:
    resampler = StreamResampler(SAMPLE_RATE, MODEL_RATE)
    samples = pcm16_to_float(pcm)
    return float_to_pcm16(np.concatenate([resampler.process(samples), resampler.flush()]))
