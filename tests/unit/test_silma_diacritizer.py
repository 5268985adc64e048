"""The silma engine's diacritizers: text2tashkeel's bundled model, CATT from local files, off."""

from __future__ import annotations

import re
import socket
import urllib.request
from pathlib import Path

import pytest

from bridge.errors import ConfigError
from bridge.tts_server.engines.silma.diacritizer import (
    MAX_SPAN_CHARS,
    Diacritizer,
    load_diacritizer,
)
from tests.catt_onnx import CLASSES, LETTER_IDS, write_catt_model

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


# CATT (catt_tashkeel 1.0.2) on tiny random ONNX files of its layout (tests/catt_onnx.py).
MARKS = {"<NT>": "", "a": "\u064e", "o": "\u0652", "<SF>": "\u0651\u064e"}  # <SF>: shadda, fatha


@pytest.fixture
def network_attempts(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every connection tried, refused: catt's downloader (urllib) would show up here."""
    attempts: list[object] = []

    def refuse(_sock: socket.socket, address: object) -> None:
        attempts.append(address)
        raise OSError(f"test: no network ({address})")

    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")  # an unreachable loopback port
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


def catt(folder: Path, *, seed: int = 0, always: str | None = None) -> Diacritizer:
    loaded = load_diacritizer("catt", write_catt_model(folder, seed=seed, always=always))
    assert loaded is not None
    return loaded


def marked(sentence: str, mark: str) -> str:
    return "".join(c if c == " " else c + mark for c in sentence)


def test_the_tiny_files_use_catt_tashkeels_vocabulary() -> None:
    from catt_tashkeel.tokenizer import TashkeelTokenizer

    tokenizer = TashkeelTokenizer()
    assert len(tokenizer.letters) == LETTER_IDS
    assert tuple(tokenizer.tashkeel_list) == CLASSES


def test_catt_loads_its_two_files_and_downloads_nothing(
    tmp_path: Path, network_attempts: list[object]
) -> None:
    with pytest.raises(OSError, match="no network"):  # the guard does see urllib's connections
        urllib.request.urlopen("https://github.com/abjadai/catt/releases")
    network_attempts.clear()
    assert catt(tmp_path, always="a")(SENTENCES[0]) == marked(SENTENCES[0], MARKS["a"])
    assert network_attempts == []


@pytest.mark.parametrize("sentence", SENTENCES)
@pytest.mark.parametrize("tag", list(MARKS))
def test_catt_puts_the_models_mark_after_every_letter(
    tmp_path: Path, network_attempts: list[object], tag: str, sentence: str
) -> None:
    assert catt(tmp_path, always=tag)(sentence) == marked(sentence, MARKS[tag])


@pytest.mark.parametrize("sentence", SENTENCES)
def test_catt_with_random_weights_keeps_the_letters_and_is_deterministic(
    tmp_path: Path, network_attempts: list[object], sentence: str
) -> None:
    first = catt(tmp_path / "a", seed=7)(sentence)
    assert letters(first) == sentence
    assert HARAKAT.search(first)
    assert catt(tmp_path / "b", seed=7)(sentence) == first  # the marks are the weights' alone
    assert catt(tmp_path / "c", seed=8)(sentence) != first


def test_catt_diacritizes_a_span_over_the_bound_in_pieces(
    tmp_path: Path, network_attempts: list[object]
) -> None:
    span = " ".join([SENTENCES[1]] * 40)
    assert len(span) > MAX_SPAN_CHARS
    assert catt(tmp_path, always="a")(span) == marked(span, MARKS["a"])
    random = catt(tmp_path / "random", seed=7)(span)
    assert letters(random) == span
    assert HARAKAT.search(random.split(" ")[-1])


def test_a_corrupt_catt_encoder_is_a_config_error_at_load(tmp_path: Path) -> None:
    write_catt_model(tmp_path)
    (tmp_path / "encoder.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(ConfigError, match=r"do not load: .*encoder\.onnx.*Protobuf parsing failed"):
        load_diacritizer("catt", tmp_path)


def test_catt_files_of_the_wrong_shape_fail_at_load_not_at_a_call(tmp_path: Path) -> None:
    write_catt_model(tmp_path)
    # the encoder where the decoder belongs: it loads, and names no input catt feeds the decoder
    (tmp_path / "decoder.onnx").write_bytes((tmp_path / "encoder.onnx").read_bytes())
    with pytest.raises(ConfigError, match=rf"{re.escape(str(tmp_path))} do not load: .*enc_src"):
        load_diacritizer("catt", tmp_path)
