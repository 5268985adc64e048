"""SILMA's <STAG_*> pronunciation hints expanded into words, in English and Arabic."""

import pytest

from bridge.tts_server.pronunciation import DIGITS, LETTERS, SYMBOLS, expand_hints


def test_a_phone_number_is_read_digit_by_digit():
    assert expand_hints("Call <STAG_PN>92005455</STAG_PN> now.", "en") == (
        "Call nine two zero zero five four five five now.")


def test_arabic_models_get_arabic_digit_words():
    assert expand_hints("اتصل على <STAG_PN>0123</STAG_PN>", "ar") == "اتصل على صفر واحد اثنان ثلاثة"


@pytest.mark.parametrize("digits", ["٩٢٠", "۹۲۰", "920"])
def test_arabic_indic_digits_are_digits_too(digits):
    assert expand_hints(f"<STAG_PN>{digits}</STAG_PN>", "en") == "nine two zero"


def test_groups_of_a_number_get_a_pause_and_plus_is_said():
    assert expand_hints("<STAG_PN>+966 (50) 123-4</STAG_PN>", "en") == (
        "plus nine six six, five zero, one two three, four")
    assert expand_hints("<STAG_PN>+1 2</STAG_PN>", "ar") == "زائد واحد، اثنان"


def test_letters_in_a_number_are_kept():
    assert expand_hints("<STAG_PN>1-800-FLOWERS</STAG_PN>", "en") == (
        "one, eight zero zero, FLOWERS")


def test_an_email_is_spelled_with_letter_names_at_and_dot():
    assert expand_hints("Write to <STAG_EMAIL>a.b@c.com</STAG_EMAIL>.", "en") == (
        "Write to eigh dot bee at see dot see oh em.")


def test_an_email_in_arabic():
    assert expand_hints("<STAG_EMAIL>Ab_1@x.io</STAG_EMAIL>", "ar") == (
        "إيه بي شرطة سفلية واحد آت إكس نقطة آي أو")


def test_a_link_keeps_words_and_spells_www_and_short_parts():
    assert expand_hints("See <STAG_LINK>https://www.silma.ai/tts-v2/</STAG_LINK> today", "en") == (
        "See double you double you double you dot silma dot eigh eye slash tts dash vee two today")


def test_a_link_in_arabic_names_its_symbols_in_arabic():
    assert expand_hints("<STAG_LINK>http://example.com/a?b=1</STAG_LINK>", "ar") == (
        "example نقطة com شرطة مائلة إيه علامة استفهام بي يساوي واحد")


def test_an_unknown_hint_keeps_its_text_and_loses_its_tags():
    assert expand_hints("Say <STAG_NAME>Silma</STAG_NAME> slowly", "en") == "Say Silma slowly"


def test_known_hints_inside_an_unknown_one_are_expanded():
    assert expand_hints("<STAG_X>code <STAG_PN>42</STAG_PN></STAG_X>!", "en") == "code four two!"


@pytest.mark.parametrize("text", [
    "Call <STAG_PN>123 now",        # never closed
    "Call 123</STAG_PN> now",       # never opened
    "Call <STAG_PN>123</STAG_EMAIL> now",  # closed by another kind
])
def test_dangling_tags_are_dropped(text):
    assert expand_hints(text, "en") == "Call 123 now"


def test_a_hint_touching_words_stays_apart_from_them():
    assert expand_hints("Call<STAG_PN>12</STAG_PN>ext", "en") == "Call one two ext"
    assert expand_hints("(<STAG_PN>12</STAG_PN>)", "en") == "(one two)"


def test_text_without_hints_is_unchanged():
    text = "Nothing to expand here: 92005455, a.b@c.com."
    assert expand_hints(text, "en") == text
    assert expand_hints("  padded  ", "ar") == "padded"


def test_an_empty_hint_says_nothing():
    assert expand_hints("a <STAG_PN></STAG_PN> b", "en") == "a b"


def test_every_table_is_complete_in_both_languages():
    for language in ("en", "ar"):
        assert len(DIGITS[language]) == 10
        assert len(LETTERS[language]) == 26
        assert set(SYMBOLS[language]) == set(SYMBOLS["en"])
        assert all(word.strip() for word in (*DIGITS[language], *LETTERS[language],
                                             *SYMBOLS[language].values()))
