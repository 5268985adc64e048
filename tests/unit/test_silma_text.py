"""Chunking for the silma engine: a short first clause, then sentence-sized chunks."""

from __future__ import annotations

import pytest

from bridge.tts_server.engines.silma.text import (
    FIRST_MAX_CHARS,
    MAX_CHARS,
    pause_after,
    split_for_speech,
)

LONG_STORY = " ".join(f"This is sentence number {n} of a long story." for n in range(1, 13))


def test_first_chunk_is_the_first_clause_then_sentences() -> None:
    chunks = split_for_speech(
        "Hi, thanks for calling. Your appointment is confirmed for Tuesday. Anything else?"
    )
    assert chunks == [
        "Hi, thanks for calling.",  # "Hi," alone is too short: merged with the next clause
        "Your appointment is confirmed for Tuesday. Anything else?",
    ]


def test_long_replies_come_in_whole_sentences_up_to_the_size_limit() -> None:
    chunks = split_for_speech(LONG_STORY)
    assert chunks[0] == "This is sentence number 1 of a long story."
    assert all(len(c) <= MAX_CHARS for c in chunks)
    assert all(c.endswith("story.") for c in chunks)  # never cut inside a sentence
    assert " ".join(chunks) == LONG_STORY


@pytest.mark.parametrize(
    "text",
    [
        "word " * 80,  # no punctuation at all
        "A" * 300,  # one very long "word"
        "First clause, " + "and then a very long second clause without any pause " * 5 + ".",
        "مرحبا، كيف حالك اليوم؟ أنا بخير والحمد لله. شكرا لاتصالك بنا.",
    ],
)
def test_every_chunk_fits_and_nothing_is_lost(text: str) -> None:
    chunks = split_for_speech(text)
    assert len(chunks[0]) <= FIRST_MAX_CHARS
    assert all(0 < len(c) <= MAX_CHARS for c in chunks)
    assert "".join(chunks).replace(" ", "") == text.replace(" ", "")


def test_numbers_with_a_point_do_not_end_a_clause() -> None:
    assert split_for_speech("It costs 3.5 dollars today.") == ["It costs 3.5 dollars today."]


def test_empty_text_has_no_chunks() -> None:
    assert split_for_speech("  \n ") == []


def test_pauses_follow_the_punctuation() -> None:
    assert pause_after("The end.") > pause_after("a clause,") > pause_after("cut mid clause")
    assert pause_after("كيف حالك؟") == pause_after("The end.")
