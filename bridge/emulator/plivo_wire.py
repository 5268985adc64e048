"""Plivo, emulated: fetches the answer URL, opens the audio stream, plays the caller's part.

Speaks only the Plivo Audio Streams protocol (see PROTOCOLS.md), on the provider-neutral call
leg of call.py. What differs from Twilio: Plivo XML with the stream URL as the element's
text; no `connected` message; sequenceNumber and chunk are numbers, timestamps strings of
wall-clock Unix milliseconds; checkpoints are acknowledged with `playedStream`; `clearAudio`
is answered with `clearedAudio` and the checkpoints it drops are NEVER acknowledged; a
hang-up just closes the socket.
"""

import secrets
import string
import time
import uuid

import aiohttp
import orjson
from yarl import URL

from bridge.emulator.call import CallEmulator
from bridge.emulator.wire import (
    Answer,
    Checked,
    Outbound,
    Wire,
    check_stream_url,
    checked_mark,
    checked_media,
    fetch_document,
    load_outbound,
    refusal,
    unexpected_fields,
    wrong_stream,
    xml_root,
)
from bridge.errors import ProtocolError
from bridge.telephony.plivo import NONCE_HEADER, SIGNATURE_HEADER, compute_signature

# The only codec the emulator streams; every playAudio must declare the same.
CONTENT_TYPE = "audio/x-mulaw"
SAMPLE_RATE = 8000
_EXTRA_HEADERS_MAX_BYTES = 512  # Plivo's limit on the extraHeaders attribute
_ACCOUNT_ID_CHARS = string.ascii_uppercase + string.digits


def new_account_id() -> str:
    """A Plivo-shaped auth id: MA and 18 capitals or digits."""
    return "MA" + "".join(secrets.choice(_ACCOUNT_ID_CHARS) for _ in range(18))


def new_nonce() -> str:
    return str(secrets.randbelow(10**20))


def signature_headers(
    auth_token: str, method: str, url: str, params: dict[str, str]
) -> dict[str, str]:
    """X-Plivo-Signature-V3 and its nonce for a request to `url` ({} params for a GET)."""
    nonce = new_nonce()
    return {
        SIGNATURE_HEADER: compute_signature(auth_token, method, url, nonce, params),
        NONCE_HEADER: nonce,
    }


def answer_params(
    call_uuid: str, *, caller: str = "14155550100", called: str = "14155550101"
) -> dict[str, str]:
    """The parameters Plivo sends its answer URL for an inbound call."""
    return {
        "CallUUID": call_uuid,
        "From": caller,
        "To": called,
        "CallStatus": "in-progress",
        "Direction": "inbound",
        "Event": "StartApp",
    }


def parse_extra_headers_attribute(text: str) -> dict[str, str]:
    """The extraHeaders attribute ("k=v,k2=v2") as a dict, held to Plivo's rules."""
    if not text:
        return {}
    if len(text.encode()) > _EXTRA_HEADERS_MAX_BYTES:
        raise ProtocolError(
            f"<Stream extraHeaders> is {len(text.encode())} bytes; Plivo allows "
            f"{_EXTRA_HEADERS_MAX_BYTES}"
        )
    headers: dict[str, str] = {}
    for pair in text.split(","):
        key, equals, value = pair.partition("=")
        if not (equals and _alphanumeric(key) and _alphanumeric(value)):
            raise ProtocolError(
                f"<Stream extraHeaders> pair {pair!r:.60} is not key=value in ASCII letters "
                "and digits"
            )
        headers[key] = value
    return headers


def _alphanumeric(text: str) -> bool:
    return text.isascii() and text.isalnum()


def parse_answer_xml(text: str) -> tuple[str, dict[str, str]]:
    """The <Stream> URL and its extraHeaders, or ProtocolError saying what is wrong."""
    root = xml_root(text, "Plivo XML")
    stream = root.find("Stream")
    if stream is None and (refused := refusal(root, ("Hangup",))) is not None:
        raise refused
    if stream is None:
        raise ProtocolError("Plivo XML has no <Stream>")
    if stream.get("bidirectional", "").lower() != "true":
        raise ProtocolError(
            '<Stream> is not bidirectional="true": Plivo would ignore the audio sent back'
        )
    content_type = stream.get("contentType")
    if content_type is None:
        # Plivo's pages disagree on the default, so a bridge must say which codec it sends.
        raise ProtocolError("<Stream> has no contentType")
    if content_type.replace(" ", "") != f"{CONTENT_TYPE};rate={SAMPLE_RATE}":
        raise ProtocolError(
            f"<Stream contentType={content_type!r:.60}>: the emulator streams only "
            f"{CONTENT_TYPE};rate={SAMPLE_RATE}"
        )
    url = stream.text or ""
    if url != url.strip():
        # The URL is the element's text: pretty-printed XML puts whitespace into it.
        raise ProtocolError("<Stream> URL has whitespace around it")
    check_stream_url(url, "Plivo <Stream> URL")
    return url, parse_extra_headers_attribute(stream.get("extraHeaders", ""))


async def fetch_answer_xml(
    session: aiohttp.ClientSession,
    answer_url: str,
    params: dict[str, str],
    auth_token: str | None,
    method: str = "POST",
) -> tuple[str, dict[str, str]]:
    """Request the answer URL like Plivo does (a form POST, or a GET with the parameters in the
    query); return the stream URL and its extra headers."""
    verb = method.upper()
    post = verb == "POST"
    url = answer_url if post else str(URL(answer_url).update_query(params))
    headers = {}
    if auth_token:
        # A GET's parameters are signed as part of its URL.
        headers = signature_headers(auth_token, verb, url, params if post else {})
    body = await fetch_document(
        session, verb, url, headers=headers, form=params if post else None, what="answer URL"
    )
    return parse_answer_xml(body)


# --- what Plivo sends (sequenceNumber and chunk are numbers, timestamps strings) ---------------


def start_message(
    seq: int, stream_id: str, call_id: str, account_id: str, extra_headers: str
) -> str:
    return orjson.dumps(
        {
            "event": "start",
            "sequenceNumber": seq,
            "start": {
                "callId": call_id,
                "streamId": stream_id,
                "accountId": account_id,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": CONTENT_TYPE, "sampleRate": SAMPLE_RATE},
            },
            "extra_headers": extra_headers,
        }
    ).decode()


def media_message(
    seq: int, chunk: int, timestamp_ms: int, payload_b64: str, stream_id: str, extra_headers: str
) -> str:
    # A template, not a dict + dumps: this runs 50 times a second per call. Every substituted
    # value but the extra headers is digits, hex, dashes or base64: only they need escaping.
    return (
        f'{{"event":"media","sequenceNumber":{seq},"streamId":"{stream_id}",'
        f'"media":{{"track":"inbound","timestamp":"{timestamp_ms}","chunk":{chunk},'
        f'"payload":"{payload_b64}"}},"extra_headers":{orjson.dumps(extra_headers).decode()}}}'
    )


def dtmf_message(seq: int, stream_id: str, digit: str, timestamp_ms: int) -> str:
    return orjson.dumps(
        {
            "event": "dtmf",
            "sequenceNumber": seq,
            "streamId": stream_id,
            "dtmf": {"track": "inbound", "digit": digit, "timestamp": str(timestamp_ms)},
        }
    ).decode()


def played_stream_message(seq: int, stream_id: str, name: str) -> str:
    return orjson.dumps(
        {"event": "playedStream", "sequenceNumber": seq, "streamId": stream_id, "name": name}
    ).decode()


def cleared_audio_message(seq: int, stream_id: str) -> str:
    return orjson.dumps(
        {"event": "clearedAudio", "sequenceNumber": seq, "streamId": stream_id}
    ).decode()


# --- what Plivo accepts -----------------------------------------------------------------------


_OUTBOUND_FIELDS = {
    "playAudio": frozenset({"event", "media"}),  # names no stream: the socket is the stream
    "checkpoint": frozenset({"event", "streamId", "name"}),
    "clearAudio": frozenset({"event", "streamId"}),
}
_MEDIA_FIELDS = frozenset({"contentType", "sampleRate", "payload"})


def parse_outbound(data: str, stream_id: str) -> Checked:
    """Check a text frame from the bridge as strictly as Plivo would.

    Returns the message when Plivo would still act on it (None when it would drop it) and the
    problems found. Never quotes payloads: problems end up in logs and reports.
    """
    msg, problems = load_outbound(data, _OUTBOUND_FIELDS, "Plivo")
    if msg is None:
        return None, problems
    event = msg["event"]
    if event != "playAudio":
        if wrong := wrong_stream(msg, "streamId", stream_id, event):
            return None, problems + wrong
        if event == "clearAudio":
            return Outbound("clear"), problems
        parsed, more = checked_mark(msg.get("name"), event)
        return parsed, problems + more

    media = msg.get("media")
    if not isinstance(media, dict):
        problems.append("playAudio: missing the 'media' object")
        return None, problems
    problems += unexpected_fields(media, _MEDIA_FIELDS, event, inside="media")
    # Plivo decodes by what playAudio declares: another codec than the answer XML's is noise.
    content_type = media.get("contentType")
    if content_type != CONTENT_TYPE:
        problems.append(
            f"playAudio: contentType {content_type!r:.60} is not the stream's {CONTENT_TYPE!r}"
        )
    rate = media.get("sampleRate")
    if type(rate) is not int or rate != SAMPLE_RATE:
        problems.append(f"playAudio: sampleRate {rate!r:.20} is not the number {SAMPLE_RATE}")
    parsed, more = checked_media(media.get("payload"), event)
    return parsed, problems + more


# --- the call ---------------------------------------------------------------------------------


class PlivoWire(Wire):
    """A Plivo audio stream: `start` first, checkpoints acknowledged with `playedStream` except
    those a clear drops, `clearedAudio` after a clear, no stop message."""

    provider = "plivo"
    answer_path = "/plivo/answer"
    checkpoint_acks_cleared = False

    def __init__(
        self, call_sid: str | None, account_sid: str | None, parameters: dict[str, str] | None
    ) -> None:
        super().__init__(call_sid, account_sid, parameters)
        # The start message's extra_headers: Plivo's own example joins the pairs with ';'
        # while the XML attribute uses ',', so the bridge must take both.
        self.extra_headers = ";".join(f"{k}={v}" for k, v in self.parameters.items())
        self._epoch_ms = 0  # wall-clock Unix ms at `start`: media timestamps count from it

    @staticmethod
    def new_call_sid() -> str:
        return str(uuid.uuid4())

    @staticmethod
    def new_account_sid() -> str:
        return new_account_id()

    @staticmethod
    def new_stream_sid() -> str:
        return str(uuid.uuid4())

    @classmethod
    async def answer(cls, session: aiohttp.ClientSession, url: str, token: str | None) -> Answer:
        call_id = cls.new_call_sid()
        stream_url, headers = await fetch_answer_xml(session, url, answer_params(call_id), token)
        return Answer(stream_url, headers, call_id, cls.new_account_sid())

    def upgrade_headers(self, stream_url: str, auth_token: str | None) -> dict[str, str]:
        if not auth_token:
            return {}
        # Undocumented: signed as a GET of the http(s) form of the URL, what the bridge checks.
        http_url = "http" + stream_url.removeprefix("ws")
        return signature_headers(auth_token, "GET", http_url, {})

    def start(self) -> str:
        self._epoch_ms = time.time_ns() // 1_000_000
        return start_message(
            self.next_seq(), self.stream_sid, self.call_sid, self.account_sid, self.extra_headers
        )

    def media(self, chunk: int, offset_ms: int, payload_b64: str) -> str:
        return media_message(
            self.next_seq(),
            chunk,
            self._epoch_ms + offset_ms,
            payload_b64,
            self.stream_sid,
            self.extra_headers,
        )

    def dtmf(self, digit: str, offset_ms: int) -> str:
        return dtmf_message(self.next_seq(), self.stream_sid, digit, self._epoch_ms + offset_ms)

    def played(self, name: str) -> str:
        return played_stream_message(self.next_seq(), self.stream_sid, name)

    def cleared(self) -> str:
        return cleared_audio_message(self.next_seq(), self.stream_sid)

    def parse(self, data: str) -> Checked:
        return parse_outbound(data, self.stream_sid)


class PlivoCallEmulator(CallEmulator):
    """One emulated call leg on a Plivo audio stream (see CallEmulator). `call_sid` holds the
    call UUID, `stream_sid` the streamId, `parameters` the extra headers."""

    wire_type = PlivoWire
