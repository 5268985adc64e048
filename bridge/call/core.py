"""One call's decisions, with no I/O: what the bridge does when the provider, the agent, the TTS
or the clock says something. The async shell (session.py) feeds it events and carries out the
actions it returns, in order.

Pure and synchronous so every rule is a unit test with an injected clock:
- a stream is admitted for one call: its first valid start opens the call's speech, a second
  start is malformed, a start naming another call (or none within START_TIMEOUT_S) ends it;
- an utterance is live from the moment it is said until it is heard (its mark echoed),
  interrupted or failed; at most MAX_PENDING_UTTERANCES bounded ones are live at once;
- caller speech while anything is live is a barge-in: the line is silenced, every live
  utterance is cut, and the agent is told how much of each the caller heard (unplayed audio is
  the tail of what was sent, so it is taken from the newest utterances first). What counts as
  speech is the call's barge-in rule: voice activity (the default), or words: a transcript of
  at least `barge_in_words` words of speech that overlapped the agent's, so a cough or a
  "mm-hm" does not cut the agent off (and voice again once the call's speech to text failed);
- what the caller said (the speech to text's transcripts) goes to the agent; each final one
  opens a turn, whose reply is the next utterance said (without speech to text, each endpoint
  of the voice detector does), so the trace splits the answer's latency;
- a hang-up with a goodbye waits until the goodbye is over (heard, cut or failed) or its
  deadline passes, then ends the call at the provider, with the hang-up's reason ("hangup",
  or "drained" when the bridge shuts down);
- a stream whose peer has gone silent (no read for the inactivity timeout) ends "inactive";
- a part that fails (sender, speaker, agent loop, the TTS opening) ends the call with its reason.
"""

from __future__ import annotations

import dataclasses
import enum

from bridge.agent import base as agent_events
from bridge.agent.base import AgentEvent
from bridge.errors import BridgeError
from bridge.telephony.events import StreamStarted
from bridge.tracing.trace import CallTrace, TurnTrace, UtteranceTrace

# Utterances said but not yet heard (or ended otherwise): past this a say is refused. A caller
# pressing keys faster than the agent can answer must not queue minutes of speech.
MAX_PENDING_UTTERANCES = 8
# A carrier sends start right after the upgrade; a stream that has sent no valid one by then is
# closed (it holds a socket and a spent token, and may be a probe).
START_TIMEOUT_S = 10.0
# A transcript is the STT backend's (maybe a remote service's) text: past this it is cut, so
# no transcript grows the agent's history by more than a caller says in two minutes.
MAX_TRANSCRIPT_CHARS = 2000


class CallBusy(BridgeError):
    """A say refused: the call already has as many utterances waiting as it may."""


class CallState(enum.Enum):
    CONNECTED = "connected"  # the socket is up; no valid start yet
    OPENING = "opening"  # started; the call's TTS is opening (says wait for it)
    LIVE = "live"  # speaking: sender, speaker and agent run
    HANGING_UP = "hanging_up"  # waiting for the goodbye, then ending at the provider
    ENDING = "ending"  # decided to end: the shell tears the call down
    ENDED = "ended"


# -- actions: what the shell must do, in order ----------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class Tell:
    """Queue an event for the agent."""

    event: AgentEvent


@dataclasses.dataclass(frozen=True, slots=True)
class Silence:
    """Drop queued audio and synthesis and send the provider's clear: the caller's line goes
    quiet at once."""


@dataclasses.dataclass(frozen=True, slots=True)
class OpenSpeech:
    """Open the call's TTS, then start the sender, the speaker and the agent."""

    start: StreamStarted


@dataclasses.dataclass(frozen=True, slots=True)
class Finished:
    """An utterance is over (its outcome is set): release whoever waits for it and count it."""

    utterance: UtteranceTrace


@dataclasses.dataclass(frozen=True, slots=True)
class Refused:
    """An input refused past a bound or a rule: count it by kind and log it (the kind is the
    log event's name)."""

    kind: str
    detail: str
    counted: bool = True  # False: only logged (it is counted as malformed instead)


@dataclasses.dataclass(frozen=True, slots=True)
class HangUp:
    """End the call at the provider, then close the stream."""


@dataclasses.dataclass(frozen=True, slots=True)
class End:
    """The call is over: stop everything and end the trace with `reason`."""

    reason: str


Action = Tell | Silence | OpenSpeech | Finished | Refused | HangUp | End
NOTHING: tuple[Action, ...] = ()  # most media messages: no allocation per frame


def heard_text(text: str, played_s: float, audio_s: float) -> str:
    """The words the caller probably heard: the played share of the text, cut at a word."""
    if audio_s <= 0 or played_s <= 0:
        return ""
    share = min(1.0, played_s / audio_s)
    if share >= 1.0:
        return text
    cut = text[: int(len(text) * share)]
    return cut.rsplit(" ", 1)[0] if " " in cut else ""


def word_count(text: str) -> int:
    """Words with a letter or digit in them: an engine's noise markers ("[noise]", "<sil>")
    and lone punctuation are not words a caller said."""
    return sum(1 for word in text.split() if any(c.isalnum() for c in word)
               and not (word[0] in "[<(" and word[-1] in "]>)"))


def attribute_unplayed(cut: list[UtteranceTrace], unplayed_s: float) -> None:
    """Set how much of each cut utterance was played: the audio still unplayed at the provider
    is the tail of what was sent, so it comes off the newest utterances first."""
    for utt in sorted(cut, key=lambda u: -u.index):
        not_heard = min(utt.sent_seconds, unplayed_s)
        unplayed_s -= not_heard
        utt.played_seconds = utt.sent_seconds - not_heard


_OVER = (CallState.ENDING, CallState.ENDED)


class CallCore:
    def __init__(self, trace: CallTrace, *, now: float, expected_call_id: str = "",
                 max_pending: int = MAX_PENDING_UTTERANCES,
                 start_timeout_s: float = START_TIMEOUT_S, transcribing: bool = False,
                 barge_in_words: int = 0) -> None:
        """`transcribing`: the call has speech to text. `barge_in_words`: 0, voice activity
        interrupts the agent; n > 0 (needs `transcribing`), only n words of the caller do."""
        if barge_in_words and not transcribing:
            raise ValueError("barge-in by words needs speech to text")
        self.trace = trace
        self.state = CallState.CONNECTED
        # The call id the stream was admitted for (its token's): a start naming another is
        # refused, so one call's token cannot carry another call.
        self._expected_call_id = expected_call_id
        self._max_pending = max_pending
        self.start: StreamStarted | None = None
        self._live: dict[int, UtteranceTrace] = {}  # said, not yet over; in order of saying
        # Failed utterances whose audio (what arrived before the failure) is still queued or
        # unconfirmed: over for the agent, yet a barge-in must still silence them.
        self._speech_started_at: float | None = None
        self._start_deadline: float | None = now + start_timeout_s
        self._goodbye: int | None = None  # the goodbye utterance a hang-up waits for
        self._goodbye_deadline: float | None = None
        self._hangup_reason = "hangup"
        self._speech_open = False  # sender and speaker run: there is a line to silence
        self._transcribing = transcribing
        self._barge_in_words = barge_in_words
        self._caller_speaking = False  # between the detector's speech start and its end
        # Caller audio time from which the caller's speech overlapped the agent's: only words
        # said from then on interrupt (a late transcript of earlier speech does not).
        self._overlap_from_s: float | None = None
        self._endpoint_ns: int | None = None  # the last endpoint no final transcript took yet
        self._turn: TurnTrace | None = None  # the turn whose reply is the next utterance said
        self._turn_speaking = False  # no speech started since its final: more finals join it
        self.end_reason = ""

    @property
    def over(self) -> bool:
        return self.state in _OVER

    @property
    def speaking(self) -> bool:
        """Something said is still queued, being synthesized, on the wire or unconfirmed."""
        return self._speech_open and not self.over and bool(self._live)

    @property
    def live_utterances(self) -> int:
        return len(self._live)

    def next_deadline(self) -> float | None:
        """When `tick` must next run (the start or the goodbye may be overdue by then)."""
        deadlines = [d for d in (self._start_deadline, self._goodbye_deadline) if d is not None]
        return min(deadlines) if deadlines else None

    # -- the provider ------------------------------------------------------------------------
    def started(self, start: StreamStarted) -> tuple[Action, ...]:
        if self.over:
            return NOTHING
        if self.start is not None:
            self.trace.malformed_messages += 1
            return (Refused("duplicate_start", "a second start on one stream", counted=False),)
        if self._expected_call_id and start.call_id != self._expected_call_id:
            return (Refused("stream_call_mismatch", "the stream's token names another call"),
                    *self._end("stream token names another call"))
        self.start = start
        self._start_deadline = None
        self.state = CallState.OPENING
        self.trace.call_id = start.call_id or start.stream_id
        self.trace.step("start_received")
        return (Tell(agent_events.CallStarted(self.trace.call_id, self.trace.provider,
                                              dict(start.custom_parameters))),
                OpenSpeech(start))

    def malformed(self) -> None:
        self.trace.malformed_messages += 1

    def dtmf(self, digit: str) -> tuple[Action, ...]:
        if self.over:
            return NOTHING
        self._turn = None  # a key press asks for its own reply, not the last speech's
        self.trace.add_dtmf(digit)
        return (Tell(agent_events.Dtmf(digit)),)

    def stopped(self) -> tuple[Action, ...]:
        return self._end("stop")

    def stream_closed(self) -> tuple[Action, ...]:
        return self._end("socket closed")

    def inactive(self) -> tuple[Action, ...]:
        """Nothing came on the stream for the inactivity timeout: the peer is gone."""
        return self._end("inactive")

    def heard(self, utt: UtteranceTrace) -> tuple[Action, ...]:
        """The provider echoed `utt`'s mark: the caller heard all of it."""
        if self._live.get(utt.index) is not utt:
            return NOTHING  # cut meanwhile: its echo tells the agent nothing
        utt.step("playout_finished")
        utt.played_seconds = utt.sent_seconds
        if utt.lost:  # the agent was told of each lost piece: it did not hear it all
            utt.finish("failed")
            return self._over(utt)
        utt.finish("played")
        return (*self._over(utt), Tell(agent_events.PlaybackFinished(utt.index, utt.text)))

    def speech_started(self, at_s: float, unplayed_s: float) -> tuple[Action, ...]:
        """The caller started speaking; `unplayed_s` is the audio sent but not yet played."""
        if self.start is None or self.over:
            return NOTHING
        self._speech_started_at = at_s
        self._caller_speaking = True
        self._turn_speaking = False
        actions: tuple[Action, ...] = NOTHING
        if not self.speaking:
            self._overlap_from_s = None
        elif self._barge_in_words:
            # Not yet a barge-in: that waits for the words (transcript) of this speech.
            self._overlap_from_s = at_s if self._overlap_from_s is None else self._overlap_from_s
        else:
            self.trace.barge_ins += 1
            actions = self._interrupt(unplayed_s)
        return (*actions, Tell(agent_events.SpeechStarted()))

    def speech_ended(self, at_s: float) -> tuple[Action, ...]:
        if self.start is None or self.over:
            return NOTHING
        self._caller_speaking = False
        started = self._speech_started_at if self._speech_started_at is not None else at_s
        if not self._transcribing:  # the endpoint is the turn: the agent answers speech
            self._turn = self.trace.turn()
            self._turn.step("speech_ended")
        elif ((turn := self._turn) is not None and self._turn_speaking
              and "speech_ended" not in turn.steps):
            turn.step("speech_ended")  # a streaming backend's final came before the endpoint
        else:
            self._endpoint_ns = self.trace.clock()  # for the final transcript still to come
        return (Tell(agent_events.SpeechEnded(round(at_s - started, 3))),)

    def transcript(self, said: agent_events.Transcript, unplayed_s: float
                   ) -> tuple[Action, ...]:
        """The speech to text heard the caller say something (partial or final): the agent is
        told; with barge-in by words, enough words over the agent's speech interrupt it."""
        if self.start is None or self.over or not said.text.strip():
            return NOTHING
        refused: tuple[Action, ...] = NOTHING
        if len(said.text) > MAX_TRANSCRIPT_CHARS:
            said = dataclasses.replace(said, text=said.text[:MAX_TRANSCRIPT_CHARS])
            refused = (Refused("transcript_truncated",
                               f"a transcript past {MAX_TRANSCRIPT_CHARS} characters"),)
        words = word_count(said.text)
        if said.final and words:
            self._final(words)
        actions: tuple[Action, ...] = NOTHING
        if (self._barge_in_words and self.speaking and words >= self._barge_in_words
                and self._overlap_from_s is not None and said.end_s >= self._overlap_from_s):
            self.trace.barge_ins += 1
            actions = self._interrupt(unplayed_s)
        return (*refused, *actions, Tell(said))

    def stt_failed(self, reason: str) -> tuple[Action, ...]:
        """The call's speech to text stopped for good (`reason`: its fixed label): the call
        goes on without transcripts, barge-in falls back to voice activity and turns to the
        detector's endpoints."""
        if not self._transcribing:
            return NOTHING
        self._transcribing = False
        self._barge_in_words = 0
        self.trace.stt_failure = reason
        return (Refused("stt_failed", f"speech to text failed ({reason}); the call goes on "
                                      "without transcripts"),)

    def _final(self, words: int) -> None:
        """A final transcript: a new turn, unless it continues one still waiting for its reply
        (a streaming backend may finalize one stretch of speech in several pieces)."""
        turn = self._turn
        if turn is None or not self._turn_speaking:
            turn = self._turn = self.trace.turn()
            self._turn_speaking = True
            if self._endpoint_ns is not None:
                turn.step("speech_ended", at=self._endpoint_ns)
                self._endpoint_ns = None
            turn.step("transcript_final")
        turn.words += words

    # -- the agent ---------------------------------------------------------------------------
    def admit_utterance(self, *, bounded: bool = True) -> UtteranceTrace:
        """A new utterance, live from now; CallBusy past the bound unless not `bounded` (a
        goodbye: said once, it must not be refused)."""
        if self.start is None:
            raise RuntimeError("the call has not started")
        if bounded and len(self._live) >= self._max_pending:
            raise CallBusy(f"the call already has {len(self._live)} utterances waiting to "
                           "be heard; try again once one has played")
        utt = self.trace.utterance("")
        self._live[utt.index] = utt
        if self._turn is not None:  # the agent's first say after the caller spoke: its reply
            self._turn.reply, self._turn = utt, None
        if self._caller_speaking and self._overlap_from_s is None:
            self._overlap_from_s = self._speech_started_at  # the agent talks over the caller
        return utt

    def clear(self, unplayed_s: float) -> tuple[Action, ...]:
        """The agent asked for silence."""
        return self._interrupt(unplayed_s) if self.speaking else NOTHING

    def hang_up(self, goodbye: UtteranceTrace | None, now: float, timeout_s: float,
                reason: str = "hangup") -> tuple[Action, ...]:
        """End the call at the provider once `goodbye` (if any, already said) is over; the
        call ends with `reason`."""
        self._hangup_reason = reason
        if goodbye is not None and goodbye.index in self._live and not self.over:
            self.state = CallState.HANGING_UP
            self._goodbye = goodbye.index
            self._goodbye_deadline = now + timeout_s
            return NOTHING
        return self._hang_up()

    # -- the speech parts --------------------------------------------------------------------
    def speech_opened(self) -> tuple[Action, ...]:
        if self.state is CallState.OPENING:
            self.state = CallState.LIVE
        self._speech_open = not self.over
        return NOTHING

    def speech_unavailable(self, error: str) -> tuple[Action, ...]:
        return self._end(f"tts unavailable ({error})")

    def piece_failed(self, utt: UtteranceTrace, text: str, reason: str,
                     detail: str) -> tuple[Action, ...]:
        """The speaker gave up on one piece of `utt` after its retries: the caller will not
        hear `text`. The agent is told now; the rest of the utterance plays on, and `utt` is
        over when its mark comes back (or it is cut), as any other."""
        utt.piece_lost(reason, text, detail)
        if self.over or self._live.get(utt.index) is not utt:
            return NOTHING
        return (Tell(agent_events.PlaybackFailed(utt.index, utt.text, text, reason, detail)),)

    def part_failed(self, part: str, error: str) -> tuple[Action, ...]:
        return self._end(f"{part} failed ({error})")

    # -- the clock ---------------------------------------------------------------------------
    def tick(self, now: float) -> tuple[Action, ...]:
        if self._start_deadline is not None and now >= self._start_deadline:
            self._start_deadline = None
            if self.start is None and not self.over:
                # Admitted, yet no valid start: the socket must not idle forever.
                return (Refused("no_start", "no valid start message in time"),
                        *self._end("no valid start message"))
        if self._goodbye_deadline is not None and now >= self._goodbye_deadline:
            return self._hang_up()
        return NOTHING

    # -- the end -----------------------------------------------------------------------------
    def ended(self, reason: str) -> tuple[Action, ...]:
        """The shell tore the call down: the trace ends; whatever was live is abandoned."""
        waiting_goodbye = self._goodbye is not None
        self.state = CallState.ENDED
        self._start_deadline = None
        for utt in self._live.values():
            if utt.lost:  # part of it was never going to be heard: failed, not abandoned
                utt.finish("failed")
        self.trace.end(self.end_reason or reason)
        over: list[Action] = [Finished(utt) for utt in self._live.values()]
        self._live.clear()
        if waiting_goodbye:  # whoever asked for the hang-up must not wait for ever
            over.extend(self._hang_up())
        return tuple(over)

    # -- rules shared by the events ----------------------------------------------------------
    def _end(self, reason: str) -> tuple[Action, ...]:
        if self.over:
            return NOTHING
        self.state = CallState.ENDING
        self.end_reason = reason
        return (End(reason),)

    def _interrupt(self, unplayed_s: float) -> tuple[Action, ...]:
        cut = list(self._live.values())
        attribute_unplayed(cut, unplayed_s)
        actions: list[Action] = [Silence()]
        for utt in cut:
            utt.step("interrupted")
            utt.finish("interrupted")
            played = utt.played_seconds or 0.0
            actions.append(Tell(agent_events.Interrupted(
                utt.index, utt.text, heard_text(utt.text, played, utt.audio_seconds),
                round(played, 3), round(utt.audio_seconds, 3))))
            actions.extend(self._over(utt))
        return tuple(actions)

    def _over(self, utt: UtteranceTrace) -> tuple[Action, ...]:
        del self._live[utt.index]
        if not self._live:
            self._overlap_from_s = None  # nothing of the agent's left for the caller to cut
        if utt.index == self._goodbye:
            return (Finished(utt), *self._hang_up())
        return (Finished(utt),)

    def _hang_up(self) -> tuple[Action, ...]:
        self._goodbye = self._goodbye_deadline = None
        self.trace.end_reason = self.trace.end_reason or self._hangup_reason
        return (HangUp(),)
