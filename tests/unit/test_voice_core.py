"""VoiceRegistry decisions: inline without a clip or registration, register once, await a
registration in progress, use the id, re-register on unknown_voice once and before audio."""

import pytest

from bridge.errors import TTSReplyError
from bridge.silma import protocol as p
from bridge.silma import voice_core as v

CLIP = p.SynthesizeRequest(text="hi", reference_audio=b"RIFF" + b"\0" * 100, reference_text="t")


def test_key_none_without_clip_and_distinct_for_split() -> None:
    assert v.voice_key(p.SynthesizeRequest(text="x")) is None
    a = p.SynthesizeRequest(text="x", reference_audio=b"ab", reference_text="c")
    b = p.SynthesizeRequest(text="x", reference_audio=b"a", reference_text="bc")
    assert v.voice_key(a) != v.voice_key(b)


def test_plan_steps() -> None:
    reg = v.VoiceRegistry()
    key = v.voice_key(CLIP)
    assert reg.plan(False, key, set()) == v.Inline()
    assert reg.plan(True, None, set()) == v.Inline()
    assert key is not None
    assert reg.plan(True, key, set()) == v.Register(key)
    assert reg.plan(True, key, {key}) == v.Await(key)
    reg.registered(key, "vid-1")
    assert reg.plan(True, key, {key}) == v.UseId("vid-1")


@pytest.mark.parametrize("bad", ["", "a b", "é", "x" * (p.MAX_VOICE_ID_CHARS + 1), "a\nb"])
def test_unusable_id_refused(bad: str) -> None:
    reg = v.VoiceRegistry()
    with pytest.raises(TTSReplyError, match="unusable id"):
        reg.registered("k", bad)
    assert len(reg) == 0


def test_lru_capacity() -> None:
    reg = v.VoiceRegistry(capacity=2)
    reg.registered("a", "1")
    reg.registered("b", "2")
    assert reg.plan(True, "a", set()) == v.UseId("1")  # a becomes most recent
    reg.registered("c", "3")
    assert reg.plan(True, "b", set()) == v.Register("b")
    assert reg.plan(True, "a", set()) == v.UseId("1")


def test_unknown_voice_once_and_before_audio() -> None:
    reg = v.VoiceRegistry()
    key = v.voice_key(CLIP)
    assert key is not None
    reg.registered(key, "vid")
    sent = v.with_voice_id(CLIP, "vid")
    assert sent.reference_audio == b"" and sent.voice_id == "vid"
    err = "unknown_voice"
    assert not reg.unknown_voice(err, key, sent, yielded=True, retried=False)
    assert not reg.unknown_voice(err, key, sent, yielded=False, retried=True)
    assert not reg.unknown_voice("busy", key, sent,
                                 yielded=False, retried=False)
    assert reg.plan(True, key, set()) == v.UseId("vid")
    assert reg.unknown_voice(err, key, sent, yielded=False, retried=False)
    assert reg.plan(True, key, set()) == v.Register(key)


def test_unknown_voice_keeps_a_newer_id() -> None:
    reg = v.VoiceRegistry()
    key = v.voice_key(CLIP)
    assert key is not None
    reg.registered(key, "new")
    stale = v.with_voice_id(CLIP, "old")
    err = "unknown_voice"
    assert reg.unknown_voice(err, key, stale, yielded=False, retried=False)
    assert reg.plan(True, key, set()) == v.UseId("new")
