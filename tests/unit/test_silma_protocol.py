"""SILMA protocol messages: parse/build round trips and every validation error."""

from __future__ import annotations

import base64

import orjson
import pytest

from bridge.errors import ProtocolError, TTSError, TTSReplyError, TTSReplyTooLarge
from bridge.silma.protocol import (
    CAPABILITIES,
    MAX_CHUNK_AUDIO_BYTES,
    MAX_REPLY_BYTES,
    SEED_FORMAT,
    SEED_SAMPLE_RATE,
    AudioChunk,
    Cancel,
    Cancelled,
    ErrorReply,
    Hello,
    RequestError,
    ServerHello,
    SynthesisComplete,
    SynthesizeRequest,
    build_audio_chunk,
    build_cancel,
    build_cancelled,
    build_complete,
    build_error,
    build_hello,
    build_server_hello,
    build_synthesize,
    parse_client_message,
    parse_server_message,
)

MAX_CHARS = 50


def parse(message: object) -> object:
    return parse_client_message(orjson.dumps(message), max_text_chars=MAX_CHARS)


def seed_request(**changes: object) -> dict[str, object]:
    message: dict[str, object] = {
        "type": "synthesize",
        "audio": base64.b64encode(b"\x00\x00\x80\x3f").decode(),
        "text": "Hello.",
        "reference_text": "Hi.",
        "speed": 1.0,
        "seed": 42,
    }
    message.update(changes)
    return message


# --- client messages ---------------------------------------------------------------------------


def test_seed_request_parses_with_no_extensions() -> None:
    request = parse(seed_request())
    assert request == SynthesizeRequest(
        text="Hello.", reference_audio=b"\x00\x00\x80\x3f", reference_text="Hi.", speed=1.0, seed=42
    )
    assert isinstance(request, SynthesizeRequest)
    assert (request.output_format, request.output_rate) == (SEED_FORMAT, SEED_SAMPLE_RATE)


def test_a_body_without_type_is_a_synthesize_request() -> None:
    assert parse({"text": "Hi"}) == SynthesizeRequest(text="Hi")


def test_extensions_parse() -> None:
    request = parse(seed_request(id="r1", stream=True, format="ulaw", sample_rate=8000))
    assert isinstance(request, SynthesizeRequest)
    assert (request.id, request.stream, request.format, request.sample_rate) == (
        "r1",
        True,
        "ulaw",
        8000,
    )
    assert (request.output_format, request.output_rate) == ("ulaw", 8000)


@pytest.mark.parametrize(
    "request_",
    [
        SynthesizeRequest(text="Hello."),
        SynthesizeRequest(text="Hi", reference_audio=b"\x01\x02", reference_text="x", seed=7),
        SynthesizeRequest(
            text="Hi", speed=1.5, id="a", stream=True, format="wav", sample_rate=16000
        ),
    ],
)
def test_build_synthesize_round_trips(request_: SynthesizeRequest) -> None:
    assert parse_client_message(build_synthesize(request_), max_text_chars=MAX_CHARS) == request_


def test_build_synthesize_writes_no_extension_field_unless_set() -> None:
    body = orjson.loads(build_synthesize(SynthesizeRequest(text="Hi")))
    assert body == {"type": "synthesize", "text": "Hi", "speed": 1.0}


def test_hello_and_cancel_round_trip() -> None:
    assert parse_client_message(build_hello(), max_text_chars=MAX_CHARS) == Hello()
    assert parse_client_message(build_cancel("r9"), max_text_chars=MAX_CHARS) == Cancel("r9")


@pytest.mark.parametrize(
    ("message", "error", "request_id"),
    [
        ([1, 2], "must be a JSON object", None),
        ({"type": "dance"}, "unknown message type 'dance'", None),
        ({"type": "cancel"}, "cancel needs the id", None),
        ({"type": "cancel", "id": ""}, "cancel needs the id", None),
        (seed_request(id=5), "id must be a non-empty string", None),
        (seed_request(id=""), "id must be a non-empty string", None),
        (seed_request(id="r", text=None), "text is missing or empty", "r"),
        ({"type": "synthesize", "id": "r"}, "text is missing or empty", "r"),
        (seed_request(id="r", text="   "), "text is missing or empty", "r"),
        (seed_request(id="r", text=3), "text is missing or empty", "r"),
        (seed_request(id="r", text="x" * (MAX_CHARS + 1)), "over the limit of 50", "r"),
        (seed_request(id="r", audio="%%%"), "audio is not valid base64", "r"),
        (seed_request(id="r", audio=12), "audio must be a base64 string", "r"),
        (seed_request(id="r", reference_text=5), "reference_text must be a string", "r"),
        (seed_request(id="r", speed="fast"), "speed must be a number", "r"),
        (seed_request(id="r", speed=True), "speed must be a number", "r"),
        (seed_request(id="r", speed=3.0), "speed 3.0 is out of range", "r"),
        (seed_request(id="r", speed=0.1), "out of range", "r"),
        (seed_request(id="r", seed=1.5), "seed must be an integer", "r"),
        (seed_request(id="r", seed=True), "seed must be an integer", "r"),
        (seed_request(id="r", stream="yes"), "stream must be true or false", "r"),
        (seed_request(id="r", format="mp3"), "format must be one of", "r"),
        (seed_request(id="r", sample_rate=11025), "sample_rate must be one of", "r"),
        (seed_request(id="r", sample_rate=8000.0), "sample_rate must be one of", "r"),
        (seed_request(id="r", sample_rate="8000"), "sample_rate must be one of", "r"),
    ],
)
def test_invalid_client_messages(message: object, error: str, request_id: str | None) -> None:
    with pytest.raises(RequestError, match=error) as raised:
        parse(message)
    assert raised.value.request_id == request_id


@pytest.mark.parametrize("raw", [b"{not json", b"", "\ud800".encode("utf-8", "surrogatepass")])
def test_unreadable_client_messages(raw: bytes) -> None:
    with pytest.raises(RequestError, match="not valid JSON"):
        parse_client_message(raw, max_text_chars=MAX_CHARS)


def test_request_error_is_a_protocol_error() -> None:
    assert issubclass(RequestError, ProtocolError)


# --- server messages ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        AudioChunk("r1", 3, b"\x01\x02", "s16le", 8000),
        AudioChunk(None, 0, b"", "ulaw", 8000),
        SynthesisComplete("r1", b"\x00" * 8, "f32le", 24000),
        SynthesisComplete(None, b"", "wav", 16000, chunks=4),
        ErrorReply("busy now", "r2", "busy"),
        ErrorReply("bad", None, "bad_request"),
        Cancelled("r3"),
    ],
)
def test_server_messages_round_trip(message: object) -> None:
    builders = {
        AudioChunk: build_audio_chunk,
        SynthesisComplete: build_complete,
        ErrorReply: build_error,
        Cancelled: lambda m: build_cancelled(m.id),
    }
    raw = builders[type(message)](message)  # type: ignore[operator]
    assert parse_server_message(raw) == message


def test_server_hello_round_trips() -> None:
    hello = ServerHello(CAPABILITIES, "piper", 22050, 18, can_clone=False)
    assert parse_server_message(build_server_hello(hello)) == hello


def test_replies_carry_an_id_only_when_the_request_had_one() -> None:
    assert "id" not in orjson.loads(build_complete(SynthesisComplete(None, b"", "f32le", 24000)))
    assert orjson.loads(build_complete(SynthesisComplete("x", b"", "f32le", 24000)))["id"] == "x"


def test_only_retryable_errors_say_so() -> None:
    assert orjson.loads(build_error(ErrorReply("later", None, "busy")))["retryable"] is True
    assert orjson.loads(build_error(ErrorReply("late", None, "timeout")))["retryable"] is True
    assert "retryable" not in orjson.loads(build_error(ErrorReply("no", None, "bad_request")))


def test_seed_http_answers_parse() -> None:
    audio = b"\x00\x00\x80\x3f"
    done = parse_server_message(orjson.dumps({"audio": base64.b64encode(audio).decode()}))
    assert done == SynthesisComplete(None, audio, "", 0)
    error = parse_server_message(b'{"error": "model not loaded"}')
    assert error == ErrorReply("model not loaded", None, "internal")


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"nope", "invalid JSON"),
        (b"[]", "non-object"),
        (b'{"type": "audio_chunk", "audio": ""}', "malformed audio_chunk"),
        (b'{"type": "synthesis_complete", "audio": "%%"}', "malformed synthesis_complete"),
        (b'{"type": "mystery"}', "unknown message type"),
    ],
)
def test_malformed_server_messages(raw: bytes, error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        parse_server_message(raw)


# --- bounds on what an untrusted server may send -----------------------------------------------

F32 = base64.b64encode(b"\x00" * 16).decode()


def chunk(**changes: object) -> bytes:
    message: dict[str, object] = {"type": "audio_chunk", "id": "r1", "seq": 0, "audio": F32,
                                  "format": "f32le", "sample_rate": 24000}
    message.update(changes)
    return orjson.dumps(message)


@pytest.mark.parametrize("rate", [1, -8000, 7999, 48001, 10**12, True, 24000.0, "24000", [8000]])
def test_declared_sample_rate_outside_8_to_48_khz_is_refused(rate: object) -> None:
    # A declared 1 Hz once turned one 16 KB chunk into 795 MiB of resampled audio.
    with pytest.raises(TTSReplyError, match="sample_rate"):
        parse_server_message(chunk(sample_rate=rate))
    with pytest.raises(TTSReplyError, match="sample_rate"):
        parse_server_message(build_server_hello(ServerHello(("id",))).replace(
            b'"sample_rate":24000', b'"sample_rate":' + orjson.dumps(rate)))


@pytest.mark.parametrize("rate", [8000, 48000, 0, None])
def test_rates_at_the_bounds_or_undeclared_pass(rate: object) -> None:
    reply = parse_server_message(chunk(sample_rate=rate))
    assert isinstance(reply, AudioChunk) and reply.sample_rate == (rate or 0)


@pytest.mark.parametrize(("changes", "error"), [
    ({"format": "mp3"}, "format 'mp3'"),
    ({"format": 7}, "format '7'"),
    ({"seq": "1"}, "seq"),
    ({"seq": -1}, "seq"),
    ({"seq": True}, "seq"),
    ({"audio": 12}, "base64 string"),
    ({"audio": "abc$"}, "not valid base64"),
    ({"audio": base64.b64encode(b"\x00" * 5).decode()}, "not whole samples"),
    ({"format": "s16le", "audio": base64.b64encode(b"\x00" * 3).decode()}, "not whole samples"),
    ({"format": None, "audio": base64.b64encode(b"\x00" * 6).decode()}, "raw float32"),
    ({"id": {"a": 1}}, "id must be"),
    ({"id": 7}, "id must be"),
    ({"id": "x" * 129}, "id must be"),
    ({"type": 5}, "type is not a string"),
])
def test_every_field_of_a_reply_is_type_checked(changes: dict[str, object], error: str) -> None:
    with pytest.raises(TTSReplyError, match=error):
        parse_server_message(chunk(**changes))


def test_a_seed_wav_payload_of_any_length_passes() -> None:
    wav = b"RIFF\x00\x00\x00\x00WAVEjunk!"  # 17 bytes: WAV bodies need not be whole floats
    reply = parse_server_message(orjson.dumps({"audio": base64.b64encode(wav).decode()}))
    assert isinstance(reply, SynthesisComplete) and reply.audio == wav


def test_odd_mu_law_lengths_pass() -> None:
    reply = parse_server_message(chunk(format="ulaw", sample_rate=8000,
                                       audio=base64.b64encode(b"\xff" * 3).decode()))
    assert isinstance(reply, AudioChunk) and len(reply.audio) == 3


@pytest.mark.parametrize(("hello", "error"), [
    ({"capabilities": "id,stream"}, "capabilities"),
    ({"capabilities": [1, 2]}, "capabilities"),
    ({"capabilities": ["x"] * 65}, "capabilities"),
    ({"max_in_flight": 0}, "max_in_flight"),
    ({"max_in_flight": 1e300}, "max_in_flight"),  # int(inf) would raise OverflowError
    ({"max_in_flight": "8"}, "max_in_flight"),
    ({"can_clone": "yes"}, "can_clone"),
    ({"engine": ["x"]}, "engine"),
])
def test_malformed_hellos_are_refused(hello: dict[str, object], error: str) -> None:
    with pytest.raises(TTSReplyError, match=error):
        parse_server_message(orjson.dumps({"type": "hello", **hello}))


def test_replies_past_the_size_bounds_are_refused_before_decoding() -> None:
    giant = "A" * ((MAX_CHUNK_AUDIO_BYTES + 2) // 3 * 4 + 4)
    with pytest.raises(TTSReplyTooLarge, match="base64 audio"):
        parse_server_message(orjson.dumps({"type": "audio_chunk", "seq": 0, "audio": giant}))
    with pytest.raises(TTSReplyTooLarge, match="byte message"):
        parse_server_message(b" " * (MAX_REPLY_BYTES + 1))
    # ~20 s of 24 kHz float32, the seed protocol's whole-utterance reply, fits.
    whole = base64.b64encode(b"\x00" * (20 * 24000 * 4)).decode()
    assert len(parse_server_message(orjson.dumps({"audio": whole})).audio) == 20 * 24000 * 4  # type: ignore[union-attr]


def test_error_text_is_truncated_and_codes_must_be_strings() -> None:
    reply = parse_server_message(orjson.dumps({"type": "error", "error": "x" * 100_000}))
    assert isinstance(reply, ErrorReply) and len(reply.error) == 1000
    with pytest.raises(TTSReplyError, match="code"):
        parse_server_message(b'{"type": "error", "error": "e", "code": 5}')


def test_reply_errors_are_tts_errors_a_speaker_handles_and_never_retryable() -> None:
    assert issubclass(TTSReplyError, TTSError) and issubclass(TTSReplyError, ProtocolError)
    assert issubclass(TTSReplyTooLarge, TTSReplyError)
    with pytest.raises(TTSReplyError) as caught:
        parse_server_message(b"{")
    assert caught.value.retryable is False


@pytest.mark.parametrize("raw", [
    b'{"type": "cancelled"}', b'{"type": "voice_registered"}',
    b'{"type": "voice_registered", "voice_id": "v", "duration_s": "1"}',
    b'{"type": "synthesis_complete", "chunks": -1}', b"\xff\xfe", b"",
])
def test_other_malformed_replies_raise_only_reply_errors(raw: bytes) -> None:
    with pytest.raises(TTSReplyError):
        parse_server_message(raw)


def test_priority_deadline_and_retry_after_round_trip_and_are_bounded() -> None:
    from bridge.silma import protocol as p

    request = p.SynthesizeRequest(text="hi", priority=p.URGENT, deadline_ms=3000, id="r1")
    parsed = p.parse_client_message(p.build_synthesize(request), max_text_chars=100)
    assert isinstance(parsed, p.SynthesizeRequest)
    assert (parsed.priority, parsed.deadline_ms) == (p.URGENT, 3000)
    plain = p.parse_client_message(b'{"type":"synthesize","text":"hi"}', max_text_chars=100)
    assert isinstance(plain, p.SynthesizeRequest)
    assert (plain.priority, plain.deadline_ms) == (None, None)
    for bad in ('"priority":-1', '"priority":true', '"priority":1.0', '"deadline_ms":0',
                '"deadline_ms":"5"', f'"deadline_ms":{p.MAX_DEADLINE_MS + 1}'):
        with pytest.raises(p.RequestError):
            p.parse_client_message(f'{{"type":"synthesize","text":"hi",{bad}}}'.encode(),
                                   max_text_chars=100)
    reply = p.parse_server_message(p.build_error(p.ErrorReply("full", "r1", "busy", 0.75)))
    assert isinstance(reply, p.ErrorReply) and reply.retry_after_s == 0.75 and reply.retryable
    for bad in ("-1", "true", '"1"', "1e9"):
        with pytest.raises(TTSReplyError):
            p.parse_server_message(
                f'{{"type":"error","error":"x","code":"busy","retry_after_s":{bad}}}')
