"""The silma engine's diacritizers: text2tashkeel's bundled model, CATT from local files, off."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bridge.errors import ConfigError
from bridge.tts_server.engines.silma.diacritizer import (
    MAX_SPAN_CHARS,
    Diacritizer,
    load_diacritizer,
)

HARAKAT = re.compile(r"[\u064B-\u0652]")
SENTENCES = [
    "بسم الله الرحمن الرحيم",
    "مرحبا بكم في خدمة العملاء",
    "طلبكم في الطريق وسيصل يوم الخميس",
]


def letters(text: str) -> str:
    return HARAKAT.sub("", text)


@pytest.fixture(scope="module")
def diacritize() -> Diacritizer:
    loaded = load_diacritizer("text2tashkeel", None)
    assert loaded is not None
    return loaded


@pytest.mark.parametrize("sentence", SENTENCES)
def test_the_bundled_model_adds_marks_and_keeps_the_letters(diacritize: Diacritizer, sentence: str) -> None:
    marked = diacritize(sentence)
    assert letters(marked) == sentence
    assert len(HARAKAT.findall(marked)) >= len(sentence.replace(" ", "")) // 2


def test_a_known_phrase_is_read_as_written_in_the_quran(diacritize: Diacritizer) -> None:
    assert diacritize("بسم الله الرحمن الرحيم") == "بِسْمِ اللَّهِ الرَّحْمَنِ الرَّحِيمِ"


def test_a_span_over_the_bound_is_diacritized_in_pieces_at_words(diacritize: Diacritizer) -> None:
    span = " ".join([SENTENCES[1]] * 40)
    assert len(span) > MAX_SPAN_CHARS
    marked = diacritize(span)
    assert letters(marked) == span
    assert HARAKAT.search(marked.split(" ")[-1])  # the pieces after the bound are marked too


def test_off_is_no_diacritizer_and_catt_needs_its_files(tmp_path: Path) -> None:
    assert load_diacritizer("off", None) is None
    with pytest.raises(ConfigError, match="silma_catt_model_dir"):
        load_diacritizer("catt", None)
    with pytest.raises(ConfigError, match=r"encoder\.onnx does not exist"):
        load_diacritizer("catt", tmp_path)
    with pytest.raises(ConfigError, match="expected one of"):
        load_diacritizer("shakkala", None)
