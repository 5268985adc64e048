"""The call core's rules, driven with events and an injected clock (no loop, no sockets)."""

from __future__ import annotations

import pytest

from bridge.agent import base as agent_events
from bridge.call.core import (
    MAX_PENDING_UTTERANCES,
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


def new_core(expected: str = "CA1") -> CallCore:
    return CallCore(CallTrace(call_id="", provider="twilio", clock=Clock()), now=0.0,
                    expected_call_id=expected)


def live_core() -> CallCore:
    core = new_core()
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
