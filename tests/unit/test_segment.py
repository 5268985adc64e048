from bridge.call.segment import MAX_PIECE_CHARS, Segmenter, split_for_tts


def test_sentences_latin_and_arabic():
    assert split_for_tts("Hi there, friend! How are you? Fine.") == [
        "Hi there, friend!", "How are you?", "Fine."]
    assert split_for_tts("مرحبا بك يا صديقي. كيف حالك؟ أنا بخير!") == [
        "مرحبا بك يا صديقي.", "كيف حالك؟", "أنا بخير!"]


def test_decimal_numbers_are_not_sentence_ends():
    assert split_for_tts("It costs 3.50 dollars. Thanks.") == ["It costs 3.50 dollars.", "Thanks."]


def test_long_first_sentence_is_cut_at_a_clause():
    text = ("Welcome to the bridge, the fastest way to hear SILMA speak on a phone line today. "
            "Bye.")
    pieces = split_for_tts(text)
    assert pieces[0] == "Welcome to the bridge,"
    assert pieces[1].startswith("the fastest way")
    assert pieces[-1] == "Bye."


def test_only_the_first_piece_is_cut_at_clauses():
    text = "Hello there. Then a long second sentence, with commas, which stays whole. End."
    assert split_for_tts(text) == ["Hello there.", text[13:-5], "End."]


def test_a_very_short_first_sentence_joins_the_next():
    assert split_for_tts("Hi! Welcome to the bridge. Bye now.") == [
        "Hi! Welcome to the bridge.", "Bye now."]


def test_arabic_clause_comma_cuts_the_first_piece():
    text = "أهلا وسهلا بكم جميعا، نحن سعداء جدا بخدمتكم اليوم في هذا الاتصال الهاتفي الطويل جدا. شكرا."
    assert split_for_tts(text)[0] == "أهلا وسهلا بكم جميعا،"


def test_short_text_and_empty():
    assert split_for_tts("Hello.") == ["Hello."]
    assert split_for_tts("   ") == []


def test_streamed_text_yields_pieces_as_soon_as_complete():
    seg = Segmenter()
    assert seg.push("Good morning and") == []
    assert seg.push(" welcome, ") == ["Good morning and welcome,"]  # first piece: a clause
    assert seg.push("this is the") == []
    assert seg.push(" bridge. It") == ["this is the bridge."]
    assert seg.push(" streams, fast") == []  # later pieces wait for whole sentences
    assert seg.flush() == ["It streams, fast"]


def test_streamed_text_loses_nothing_and_starts_no_later():
    text = "Hi! This one is longer, with a clause. And the last one?"
    seg = Segmenter()
    streamed = [p for ch in text for p in seg.push(ch)] + seg.flush()
    whole = split_for_tts(text)
    assert " ".join(streamed) == " ".join(whole) == text
    # Not knowing how the sentence ends, streaming cuts at the first clause.
    assert streamed[0] == "Hi! This one is longer,"
    assert len(streamed[0]) <= len(whole[0])


def test_no_piece_is_over_the_public_apis_limit_and_hints_stay_whole() -> None:
    # One 400-character sentence (SILMA's public API takes 250 at most): cut at its clauses.
    clause = "and the caller can reach us at <STAG_PN>92005455</STAG_PN> any time, "
    sentence = "Thanks for calling, " + clause * 5 + "goodbye."
    pieces = Segmenter().push(sentence + " Next one. ")
    assert all(len(piece) <= MAX_PIECE_CHARS for piece in pieces)
    assert " ".join(pieces) == sentence + " Next one."
    assert all(piece.count("<STAG_PN>") == piece.count("</STAG_PN>") for piece in pieces)
    streamed = Segmenter()
    assert streamed.push("x" * 300) == []
    assert [len(p) for p in streamed.flush()] == [250, 50]
