"""SILMA protocol messages: parse/build round trips and every validation error."""

from __future__ import annotations

import base64

import orjson
import pytest

from bridge.errors import ProtocolError
from bridge.silma.protocol import (
    CAPABILITIES,
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
