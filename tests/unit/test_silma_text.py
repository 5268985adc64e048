"""Chunking for the silma engine: upstream's chunker, and the short first chunk before it."""

from __future__ import annotations

from bridge.tts_server.engines.silma.text import (
    FIRST_MAX_CHARS,
    UPSTREAM_MAX_CHARS,
    latency_chunks,
    split_for_speech,
    upstream_chunks,
)

LONG_STORY = " ".join(f"This is sentence number {n} of a long story." for n in range(1, 13))


def test_upstream_chunks_merge_pieces_up_to_120_characters() -> None:
    chunks = upstream_chunks(LONG_STORY)
    assert all(len(c) <= UPSTREAM_MAX_CHARS for c in chunks)
    assert " ".join(chunks) == LONG_STORY
    assert len(chunks) == 6  # 43-44 character sentences: two fit in 120, three do not


def test_a_long_first_chunk_becomes_its_first_clause_then_upstreams_chunks() -> None:
    text = "Hi, thanks for calling. Your appointment is confirmed for Tuesday. Anything else?"
    assert latency_chunks(text) == [
        "Hi, thanks for calling.",  # "Hi," alone is too short: merged with the next clause
        "Your appointment is confirmed for Tuesday. Anything else?",
    ]
    assert split_for_speech(text, "upstream") == [text]


def test_a_short_first_chunk_is_left_as_upstream_has_it() -> None:
    text = "Hi, thanks for calling. How can I help you today?"
    assert latency_chunks(text) == upstream_chunks(text) == [text]


def test_after_the_first_chunk_the_cuts_are_upstreams() -> None:
    first, *rest = latency_chunks(LONG_STORY)
    assert first == "This is sentence number 1 of a long story."  # not 2 sentences, 87 chars
    assert rest == upstream_chunks(LONG_STORY.removeprefix(first).strip())


def test_a_long_first_clause_is_cut_at_a_word() -> None:
    text = "Welcome to the customer service line of the national bank of examples and more"
    first, rest = latency_chunks(text)
    assert len(first) <= FIRST_MAX_CHARS and text.startswith(first)
    assert f"{first} {rest}" == text


def test_an_over_long_piece_is_cut_at_words_as_upstream_does() -> None:
    words = "word " * 60
    chunks = upstream_chunks(words.strip())
    assert all(len(c) <= UPSTREAM_MAX_CHARS for c in chunks)
    assert " ".join(chunks) == words.strip()


def test_decimals_do_not_split_and_blank_text_has_no_chunks() -> None:
    assert upstream_chunks("It costs 3.5 dollars today.") == ["It costs 3.5 dollars today."]
    assert latency_chunks("  \n ") == []
    assert upstream_chunks("") == []
