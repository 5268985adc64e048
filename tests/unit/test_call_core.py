"""The call core's rules, driven with events and an injected clock (no loop, no sockets)."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.agent import base as agent_events
from bridge.call.core import (
    MAX_PENDING_UTTERANCES,
    MAX_TRANSCRIPT_CHARS,
    START_TIMEOUT_S,
    Action,
    CallBusy,
    CallCore,
    CallState,
    End,
    Finished,
    HangUp,
    OpenSpeech,
    Refused,
    Silence,
    Tell,
    attribute_unplayed,
    heard_text,
    word_count,
)
from bridge.telephony.events import StreamStarted
from bridge.tracing.trace import CallTrace, UtteranceTrace


class Clock:
    def __init__(self) -> None:
        self.ns = 0

    def __call__(self) -> int:
        return self.ns


def start_message(call_id: str = "CA1") -> StreamStarted:
    return StreamStarted(stream_id="MZ1", call_id=call_id, account_id="AC1", tracks=("inbound",),
                         custom_parameters={"lang": "en"}, encoding="audio/x-mulaw",
                         sample_rate=8000)


def new_core(expected: str = "CA1", **options: Any) -> CallCore:
    return CallCore(CallTrace(call_id="", provider="twilio", clock=Clock()), now=0.0,
                    expected_call_id=expected, **options)


def live_core(**options: Any) -> CallCore:
    """A live call; `options`: transcribing, barge_in_words."""
    core = new_core(**options)
    core.started(start_message())
    core.speech_opened()
    return core


def told(actions: tuple[Action, ...]) -> list[agent_events.AgentEvent]:
    return [a.event for a in actions if isinstance(a, Tell)]


def finished(actions: tuple[Action, ...]) -> list[int]:
    return [a.utterance.index for a in actions if isinstance(a, Finished)]


def sent(utt: UtteranceTrace, seconds: float, text: str = "") -> UtteranceTrace:
    """What the speaker and sender record: text, audio queued and sent."""
    utt.text = text
    utt.audio_seconds = utt.sent_seconds = seconds
    return utt


# -- start -----------------------------------------------------------------------------------
def test_a_valid_start_opens_speech_and_tells_the_agent():
    core = new_core()
    actions = core.started(start_message())
    assert core.state is CallState.OPENING
    assert core.trace.call_id == "CA1" and "start_received" in core.trace.steps
    assert told(actions) == [agent_events.CallStarted("CA1", "twilio", {"lang": "en"})]
    assert [type(a) for a in actions] == [Tell, OpenSpeech]
    assert core.next_deadline() is None  # the start deadline is gone
    core.speech_opened()
    assert core.state is CallState.LIVE


def test_a_second_start_is_malformed_and_changes_nothing():
    core = live_core()
    actions = core.started(start_message("CA2"))
    assert actions == (Refused("duplicate_start", "a second start on one stream", counted=False),)
    assert core.trace.malformed_messages == 1
    assert core.trace.call_id == "CA1" and core.state is CallState.LIVE


def test_a_start_for_another_call_ends_the_stream():
    core = new_core(expected="CA1")
    actions = core.started(start_message("CA9"))
    assert isinstance(actions[0], Refused) and actions[0].kind == "stream_call_mismatch"
    assert actions[-1] == End("stream token names another call")
    assert core.start is None and core.over
    assert core.started(start_message("CA1")) == ()  # nothing after the end


def test_no_start_in_time_ends_the_stream_once():
    core = new_core()
    assert core.next_deadline() == START_TIMEOUT_S
    assert core.tick(START_TIMEOUT_S - 0.001) == ()
    actions = core.tick(START_TIMEOUT_S)
    assert actions == (Refused("no_start", "no valid start message in time"),
                       End("no valid start message"))
    assert core.tick(START_TIMEOUT_S + 1) == ()


def test_a_start_in_time_disarms_the_deadline():
    core = new_core()
    core.started(start_message())
    assert core.tick(START_TIMEOUT_S * 2) == ()
    assert not core.over


def test_caller_audio_before_start_is_not_speech():
    core = new_core()
    assert core.speech_started(0.1, 0.0) == ()
    assert core.speech_ended(0.5) == ()


# -- utterances, marks -----------------------------------------------------------------------
def test_say_before_start_is_an_error():
    with pytest.raises(RuntimeError):
        new_core().admit_utterance()


def test_an_echoed_mark_means_played_and_the_agent_is_told():
    core = live_core()
    utt = sent(core.admit_utterance(), 1.5, "Hello there.")
    actions = core.heard(utt)
    assert utt.outcome == "played" and utt.played_seconds == 1.5
    assert "playout_finished" in utt.steps
    assert finished(actions) == [utt.index]
    assert told(actions) == [agent_events.PlaybackFinished(utt.index, "Hello there.")]
    assert core.heard(utt) == ()  # a repeated echo is nothing


def test_the_pending_bound_refuses_a_say_but_not_a_goodbye():
    core = live_core()
    for _ in range(MAX_PENDING_UTTERANCES):
        core.admit_utterance()
    with pytest.raises(CallBusy):
        core.admit_utterance()
    goodbye = core.admit_utterance(bounded=False)
    assert core.live_utterances == MAX_PENDING_UTTERANCES + 1
    core.heard(goodbye)
    assert core.live_utterances == MAX_PENDING_UTTERANCES


def test_a_lost_piece_is_told_at_once_and_the_utterance_plays_on_until_its_echo():
    core = live_core()
    utt = sent(core.admit_utterance(), 1.0, "First part. Second part.")
    actions = core.piece_failed(utt, "Second part.", "busy", "busy: deadline of 8 s reached")
    assert told(actions) == [agent_events.PlaybackFailed(
        utt.index, "First part. Second part.", "Second part.", "busy",
        "busy: deadline of 8 s reached")]
    assert finished(actions) == []  # the first part still plays: a barge-in would cut it
    assert core.speaking and core.live_utterances == 1
    echo = core.heard(utt)
    assert finished(echo) == [utt.index] and told(echo) == []  # no playback_finished
    assert utt.outcome == "failed" and utt.error == "busy: deadline of 8 s reached"
    assert utt.lost == [("busy", "Second part.")]
    assert not core.speaking


def test_every_lost_piece_is_told_and_a_cut_utterance_keeps_its_reason():
    core = live_core()
    utt = sent(core.admit_utterance(), 2.0, "one two three four")
    core.piece_failed(utt, "one two", "stall", "stall: no audio")
    second = core.piece_failed(utt, "three four", "lost", "lost: connection")
    assert [e.failed_text for e in told(second)
            if isinstance(e, agent_events.PlaybackFailed)] == ["three four"]
    assert len(told(second)) == 1
    cut = core.speech_started(at_s=1.0, unplayed_s=1.0)
    assert utt.outcome == "interrupted" and utt.error == "stall: no audio"
    assert [type(e) for e in told(cut)] == [agent_events.Interrupted, agent_events.SpeechStarted]
    assert core.piece_failed(utt, "late", "busy", "x") == ()  # over: nothing more to tell


def test_a_piece_lost_after_the_call_ended_tells_nothing():
    core = live_core()
    utt = core.admit_utterance()
    core.stopped()
    assert core.piece_failed(utt, "text", "busy", "busy") == ()


# -- barge-in and clear ------------------------------------------------------------------------
def test_barge_in_silences_cuts_every_live_utterance_and_tells_what_was_heard():
    core = live_core()
    first = sent(core.admit_utterance(), 2.0, "one two three four")
    second = sent(core.admit_utterance(), 1.0, "five six")
    queued = core.admit_utterance()  # not synthesized yet
    actions = core.speech_started(at_s=3.0, unplayed_s=1.5)
    assert isinstance(actions[0], Silence)
    assert core.trace.barge_ins == 1
    # 1.5 s unplayed: all of `second` (the newest audio) and 0.5 s of `first`.
    assert first.played_seconds == 1.5 and second.played_seconds == 0.0
    assert [u.outcome for u in (first, second, queued)] == ["interrupted"] * 3
    events = told(actions)
    assert events[:3] == [
        agent_events.Interrupted(first.index, first.text, "one two", 1.5, 2.0),
        agent_events.Interrupted(second.index, second.text, "", 0.0, 1.0),
        agent_events.Interrupted(queued.index, "", "", 0.0, 0.0),
    ]
    assert events[3] == agent_events.SpeechStarted()
    assert finished(actions) == [first.index, second.index, queued.index]
    assert not core.speaking


def test_speech_while_silent_is_not_a_barge_in():
    core = live_core()
    actions = core.speech_started(at_s=1.0, unplayed_s=0.0)
    assert actions == (Tell(agent_events.SpeechStarted()),)
    assert core.trace.barge_ins == 0
    assert told(core.speech_ended(1.75)) == [agent_events.SpeechEnded(0.75)]


def test_no_barge_in_while_the_tts_is_opening():
    core = new_core()
    core.started(start_message())
    core.admit_utterance()
    assert not any(isinstance(a, Silence) for a in core.speech_started(1.0, 0.0))
    assert core.live_utterances == 1


def test_agent_clear_cuts_without_counting_a_barge_in():
    core = live_core()
    utt = sent(core.admit_utterance(), 1.0, "hello")
    actions = core.clear(unplayed_s=0.25)
    assert isinstance(actions[0], Silence) and utt.outcome == "interrupted"
    assert utt.played_seconds == 0.75 and core.trace.barge_ins == 0
    assert core.clear(unplayed_s=0.0) == ()  # nothing left to clear


def test_attribution_never_makes_played_negative():
    utts = [UtteranceTrace(i, "", lambda: 0) for i in range(2)]
    utts[0].sent_seconds, utts[1].sent_seconds = 0.4, 0.2
    attribute_unplayed(utts, 5.0)
    assert [u.played_seconds for u in utts] == [0.0, 0.0]


@pytest.mark.parametrize(("played", "audio", "heard"), [
    (0.0, 2.0, ""), (2.0, 2.0, "one two three four"), (1.0, 2.0, "one two"),
    (0.2, 2.0, ""), (3.0, 2.0, "one two three four"), (1.0, 0.0, ""),
])
def test_heard_text_cuts_at_a_word(played, audio, heard):
    assert heard_text("one two three four", played, audio) == heard


# -- DTMF, stop, failures --------------------------------------------------------------------------
def test_dtmf_is_traced_and_told():
    core = live_core()
    assert told(core.dtmf("5")) == [agent_events.Dtmf("5")]
    assert core.trace.dtmf == ["5"]


def test_stop_ends_once_and_later_events_are_ignored():
    core = live_core()
    assert core.stopped() == (End("stop"),)
    assert core.stream_closed() == ()
    assert core.dtmf("1") == ()
    assert core.end_reason == "stop"


@pytest.mark.parametrize(("event", "reason"), [
    (lambda c: c.part_failed("sender", "OSError"), "sender failed (OSError)"),
    (lambda c: c.speech_unavailable("ConfigError"), "tts unavailable (ConfigError)"),
    (lambda c: c.stream_closed(), "socket closed"),
])
def test_failures_end_the_call_with_their_reason(event, reason):
    core = live_core()
    assert event(core) == (End(reason),)
    assert core.state is CallState.ENDING


def test_the_end_abandons_what_is_live_and_keeps_the_first_reason():
    core = live_core()
    utt = core.admit_utterance()
    core.stopped()
    actions = core.ended("socket closed")
    assert finished(actions) == [utt.index] and utt.outcome == "abandoned"
    assert core.trace.end_reason == "stop" and core.state is CallState.ENDED


# -- hang-up ----------------------------------------------------------------------------------
def test_hang_up_without_goodbye_ends_at_the_provider_now():
    core = live_core()
    assert core.hang_up(None, now=5.0, timeout_s=3.0) == (HangUp(),)
    assert core.trace.end_reason == "hangup"


def test_hang_up_waits_for_the_goodbye_to_be_heard():
    core = live_core()
    goodbye = core.admit_utterance(bounded=False)
    assert core.hang_up(goodbye, now=5.0, timeout_s=3.0) == ()
    assert core.state is CallState.HANGING_UP and core.next_deadline() == 8.0
    actions = core.heard(goodbye)
    assert finished(actions) == [goodbye.index] and HangUp() in actions
    assert core.next_deadline() is None


def test_hang_up_goes_ahead_when_the_goodbye_is_cut_off():
    core = live_core()
    goodbye = core.admit_utterance(bounded=False)
    core.hang_up(goodbye, now=0.0, timeout_s=3.0)
    actions = core.speech_started(at_s=1.0, unplayed_s=0.5)
    assert HangUp() in actions and goodbye.outcome == "interrupted"


def test_hang_up_goes_ahead_when_the_goodbye_never_plays():
    core = live_core()
    goodbye = core.admit_utterance(bounded=False)
    core.hang_up(goodbye, now=0.0, timeout_s=3.0)
    assert core.tick(2.9) == ()
    assert core.tick(3.0) == (HangUp(),)
    assert core.tick(4.0) == ()  # once


def test_a_call_that_ends_during_the_goodbye_still_hangs_up_at_the_provider():
    core = live_core()
    goodbye = core.admit_utterance(bounded=False)
    core.hang_up(goodbye, now=0.0, timeout_s=3.0)
    core.stream_closed()
    actions = core.ended("socket closed")
    assert finished(actions) == [goodbye.index] and actions[-1] == HangUp()
    assert core.trace.end_reason == "socket closed"


def test_a_hang_up_ends_the_call_with_its_own_reason_once_the_goodbye_is_heard():
    core = live_core()
    goodbye = core.admit_utterance(bounded=False)
    assert core.hang_up(goodbye, now=0.0, timeout_s=3.0, reason="drained") == ()
    assert core.trace.end_reason is None  # not over yet: the goodbye plays
    assert HangUp() in core.heard(goodbye)
    core.stream_closed()  # the close that follows the hang-up does not rename it
    core.ended("socket closed")
    assert core.trace.end_reason == "drained"


# -- a silent peer ----------------------------------------------------------------------------
def test_a_silent_stream_ends_the_call_inactive_once():
    core = live_core()
    assert core.inactive() == (End("inactive"),)
    assert core.inactive() == () and core.stream_closed() == ()
    core.ended("socket closed")
    assert core.trace.end_reason == "inactive"


# -- what the caller said: transcripts, barge-in by words, turns ------------------------------
def said(text: str, *, final: bool = True, start_s: float = 3.0, end_s: float = 3.5
         ) -> agent_events.Transcript:
    return agent_events.Transcript(text, final, start_s, end_s, 0.2 if final else 0.0)


def words_core(min_words: int = 2) -> CallCore:
    return live_core(transcribing=True, barge_in_words=min_words)


def test_transcripts_reach_the_agent_and_empty_ones_do_not():
    core = live_core(transcribing=True)
    partial, final = said("hello", final=False), said("hello there")
    assert core.transcript(partial, 0.0) == (Tell(partial),)
    assert core.transcript(final, 0.0) == (Tell(final),)
    assert core.transcript(said("  "), 0.0) == ()


def test_with_voice_barge_in_a_transcript_cuts_nothing_more():
    core = live_core(transcribing=True)
    sent(core.admit_utterance(), 2.0, "one two")
    assert isinstance(core.speech_started(3.0, 1.0)[0], Silence)
    utt = core.admit_utterance()
    assert core.transcript(said("stop please"), 0.0) == (Tell(said("stop please")),)
    assert utt.outcome == "pending" and core.trace.barge_ins == 1


def test_with_words_barge_in_voice_alone_does_not_cut_the_agent():
    core = words_core()
    utt = sent(core.admit_utterance(), 2.0, "one two three")
    actions = core.speech_started(at_s=3.0, unplayed_s=1.0)
    assert actions == (Tell(agent_events.SpeechStarted()),)  # a cough: no Silence
    core.speech_ended(3.6)
    assert core.transcript(said("hmm"), 1.0) == (Tell(said("hmm")),)  # one word of two
    assert utt.outcome == "pending" and core.speaking and core.trace.barge_ins == 0


def test_with_words_barge_in_enough_words_over_the_agent_cut_it():
    core = words_core()
    utt = sent(core.admit_utterance(), 2.0, "one two three four")
    core.speech_started(at_s=3.0, unplayed_s=1.0)
    partial = said("wait a", final=False)
    actions = core.transcript(partial, unplayed_s=1.0)
    assert isinstance(actions[0], Silence) and utt.outcome == "interrupted"
    assert told(actions) == [
        agent_events.Interrupted(utt.index, utt.text, "one two", 1.0, 2.0), partial]
    assert core.trace.barge_ins == 1 and not core.speaking
    assert core.transcript(said("wait a second"), 0.0) == (Tell(said("wait a second")),)


def test_with_words_barge_in_a_late_transcript_of_earlier_speech_cuts_nothing():
    core = words_core(min_words=1)
    core.speech_started(at_s=1.0, unplayed_s=0.0)
    core.speech_ended(2.0)
    utt = sent(core.admit_utterance(), 2.0, "the answer")  # the agent answers the speech
    late = said("what time is it", start_s=1.0, end_s=1.5)  # its transcript, late
    assert core.transcript(late, 0.5) == (Tell(late),)
    assert utt.outcome == "pending"


def test_with_words_barge_in_the_agent_talking_over_the_caller_counts_as_overlap():
    core = words_core(min_words=1)
    core.speech_started(at_s=1.0, unplayed_s=0.0)  # the caller is still speaking when...
    utt = sent(core.admit_utterance(), 2.0, "the answer")  # ...the agent starts
    actions = core.transcript(said("no", start_s=1.0, end_s=1.4, final=False), 0.5)
    assert isinstance(actions[0], Silence) and utt.outcome == "interrupted"


def test_noise_markers_and_punctuation_are_not_words():
    assert word_count("[noise] <sil> uh , hello") == 2
    core = words_core(min_words=1)
    utt = sent(core.admit_utterance(), 2.0, "one two")
    core.speech_started(3.0, 1.0)
    core.transcript(said("[cough] ..."), 1.0)
    assert utt.outcome == "pending"


def test_words_barge_in_needs_speech_to_text():
    with pytest.raises(ValueError):
        new_core(barge_in_words=1)


def test_a_failed_speech_to_text_is_refused_once_and_voice_barges_in_again():
    core = words_core()
    [refused] = core.stt_failed("unreachable")
    assert isinstance(refused, Refused)
    assert refused.kind == "stt_failed" and "unreachable" in refused.detail
    assert core.trace.stt_failure == "unreachable"
    assert core.trace.summary()["stt_failure"] == "unreachable"
    assert core.stt_failed("again") == ()  # told once
    sent(core.admit_utterance(), 2.0, "one two")
    assert isinstance(core.speech_started(3.0, 1.0)[0], Silence)


def test_an_overlong_transcript_is_cut_and_counted():
    core = live_core(transcribing=True)
    actions = core.transcript(said("a" * (MAX_TRANSCRIPT_CHARS + 10)), 0.0)
    assert isinstance(actions[0], Refused) and actions[0].kind == "transcript_truncated"
    event = told(actions)[0]
    assert isinstance(event, agent_events.Transcript)
    assert len(event.text) == MAX_TRANSCRIPT_CHARS


def test_a_turn_splits_endpoint_transcript_and_reply():
    core = live_core(transcribing=True)
    clock = core.trace.clock
    assert isinstance(clock, Clock)
    core.speech_started(1.0, 0.0)
    clock.ns = 1_000_000_000
    core.speech_ended(2.0)
    clock.ns = 1_300_000_000
    core.transcript(said("hello", final=False), 0.0)  # a partial opens no turn
    assert core.trace.turns == []
    core.transcript(said("hello there"), 0.0)
    clock.ns = 1_800_000_000
    reply = core.admit_utterance()
    reply.step("first_text")
    clock.ns = 1_900_000_000
    reply.step("text_split")
    clock.ns = 2_100_000_000
    reply.step("first_audio")
    clock.ns = 2_110_000_000
    reply.step("first_frame_sent")
    later = core.admit_utterance()  # not a reply: the turn has had its reply
    [turn] = core.trace.turns
    assert turn.reply is reply and turn.words == 2 and later is not reply
    assert turn.to_dict(0) == {
        "index": 0, "words": 2, "reply_utterance": reply.index,
        "steps_ms": {"speech_ended": 1000.0, "transcript_final": 1300.0},
        "stt_ms": 300.0, "agent_ms": 500.0, "first_piece_ms": 100.0,
        "tts_first_audio_ms": 200.0, "bridge_ms": 10.0, "turn_ms": 1110.0,
    }
    assert core.trace.to_dict()["turn_traces"] == [turn.to_dict(core.trace.origin)]
    assert core.trace.summary()["turns"] == 1


def test_a_streaming_final_before_the_endpoint_joins_it_and_its_later_finals():
    core = live_core(transcribing=True)
    clock = core.trace.clock
    assert isinstance(clock, Clock)
    core.speech_started(1.0, 0.0)
    clock.ns = 500
    core.transcript(said("first part"), 0.0)
    core.transcript(said("and more"), 0.0)
    clock.ns = 900
    core.speech_ended(2.0)
    [turn] = core.trace.turns
    assert turn.words == 4
    assert turn.steps == {"transcript_final": 500, "speech_ended": 900}


def test_without_speech_to_text_each_endpoint_is_a_turn_and_a_key_press_is_not():
    core = live_core()
    core.speech_started(1.0, 0.0)
    core.speech_ended(2.0)
    reply = core.admit_utterance()
    core.speech_started(3.0, 0.0)
    core.speech_ended(4.0)
    core.dtmf("1")  # what the agent says next answers the key, not the speech
    core.admit_utterance()
    assert [t.reply for t in core.trace.turns] == [reply, None]
    assert "speech_ended" in core.trace.turns[0].steps


def test_a_transcript_is_one_more_event_to_a_remote_agent():
    assert agent_events.event_json(said("hello there")) == {
        "type": "transcript", "text": "hello there", "final": True, "start_s": 3.0,
        "end_s": 3.5, "latency_s": 0.2}
