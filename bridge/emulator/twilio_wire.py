"""Twilio, emulated: posts the voice webhook, opens the media stream, plays the caller's part.

Speaks only the Twilio wire protocol (docs: Media Streams WebSocket messages), so it works
against any bridge URL. The call leg itself is provider-neutral (call.py); this module is
Twilio's wire format: TwiML, the messages Twilio sends (numbers as strings), and the strict
check of what it accepts. A clear echoes every pending mark.
"""

import secrets

import aiohttp
import orjson
from twilio.request_validator import RequestValidator

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

__all__ = [
    "TwilioCallEmulator",
    "TwilioWire",
    "connected_message",
    "dtmf_message",
    "fetch_twiml",
    "mark_message",
    "media_message",
    "new_sid",
    "parse_outbound",
    "parse_twiml",
    "sign",
    "start_message",
    "stop_message",
    "voice_webhook_form",
]


def new_sid(prefix: str) -> str:
    """A Twilio-shaped id: two letters and 32 hex digits."""
    return prefix + secrets.token_hex(16)


def sign(auth_token: str, url: str, params: dict[str, str]) -> str:
    """X-Twilio-Signature for `url` and form `params` ({} for the WebSocket upgrade)."""
    return str(RequestValidator(auth_token).compute_signature(url, params))


def voice_webhook_form(
    call_sid: str,
    account_sid: str,
    *,
    caller: str = "+15005550006",
    called: str = "+15005550001",
) -> dict[str, str]:
    """The fields of Twilio's voice webhook for a ringing inbound call."""
    return {
        "CallSid": call_sid,
        "AccountSid": account_sid,
        "From": caller,
        "To": called,
        "CallStatus": "ringing",
        "Direction": "inbound",
        "ApiVersion": "2010-04-01",
    }


def parse_twiml(text: str) -> tuple[str, dict[str, str]]:
    """The <Connect><Stream> URL and its <Parameter>s, or ProtocolError saying what is wrong."""
    root = xml_root(text, "TwiML")
    stream = root.find("Connect/Stream")
    if stream is None and (refused := refusal(root, ("Reject", "Hangup"))) is not None:
        raise refused
    if stream is None:
        one_way = root.find("Start/Stream") is not None
        raise ProtocolError(
            "TwiML has <Start><Stream> (one-way); a bridge needs <Connect><Stream>"
            if one_way
            else "TwiML has no <Connect><Stream>"
        )
    url = check_stream_url(stream.get("url", ""), "TwiML <Stream url>")
    params: dict[str, str] = {}
    for param in stream.findall("Parameter"):
        name = param.get("name")
        if not name:
            raise ProtocolError("<Parameter> without a name in TwiML")
        params[name] = param.get("value", "")
    return url, params


async def fetch_twiml(
    session: aiohttp.ClientSession,
    webhook_url: str,
    form: dict[str, str],
    auth_token: str | None,
) -> tuple[str, dict[str, str]]:
    """POST the voice webhook like Twilio does; return the stream URL and its parameters."""
    headers = {"User-Agent": "TwilioProxy/1.1"}
    if auth_token:
        headers["X-Twilio-Signature"] = sign(auth_token, webhook_url, form)
    body = await fetch_document(
        session, "POST", webhook_url, headers=headers, form=form, what="voice webhook"
    )
    return parse_twiml(body)


# --- what Twilio sends (numbers travel as strings) -------------------------------------------


def connected_message() -> str:
    return '{"event":"connected","protocol":"Call","version":"1.0.0"}'


def start_message(
    seq: int,
    stream_sid: str,
    call_sid: str,
    account_sid: str,
    custom_parameters: dict[str, str],
) -> str:
    return orjson.dumps(
        {
            "event": "start",
            "sequenceNumber": str(seq),
            "start": {
                "accountSid": account_sid,
                "streamSid": stream_sid,
                "callSid": call_sid,
                "tracks": ["inbound"],
                "customParameters": custom_parameters,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
            "streamSid": stream_sid,
        }
    ).decode()


def media_message(
    seq: int, chunk: int, timestamp_ms: int, payload_b64: str, stream_sid: str
) -> str:
    # A template, not a dict + dumps: this runs 50 times a second per call. Every substituted
    # value is digits, hex or base64, so nothing needs escaping.
    return (
        f'{{"event":"media","sequenceNumber":"{seq}","media":{{"track":"inbound",'
        f'"chunk":"{chunk}","timestamp":"{timestamp_ms}","payload":"{payload_b64}"}},'
        f'"streamSid":"{stream_sid}"}}'
    )


def dtmf_message(seq: int, stream_sid: str, digit: str) -> str:
    return orjson.dumps(
        {
            "event": "dtmf",
            "streamSid": stream_sid,
            "sequenceNumber": str(seq),
            "dtmf": {"track": "inbound_track", "digit": digit},
        }
    ).decode()


def mark_message(seq: int, stream_sid: str, name: str) -> str:
    return orjson.dumps(
        {
            "event": "mark",
            "sequenceNumber": str(seq),
            "streamSid": stream_sid,
            "mark": {"name": name},
        }
    ).decode()


def stop_message(seq: int, stream_sid: str, call_sid: str, account_sid: str) -> str:
    return orjson.dumps(
        {
            "event": "stop",
            "sequenceNumber": str(seq),
            "streamSid": stream_sid,
            "stop": {"accountSid": account_sid, "callSid": call_sid},
        }
    ).decode()


# --- what Twilio accepts ------------------------------------------------------------------------


_OUTBOUND_FIELDS = {
    "media": frozenset({"event", "streamSid", "media"}),
    "mark": frozenset({"event", "streamSid", "mark"}),
    "clear": frozenset({"event", "streamSid"}),
}
_BODY_FIELDS = {"media": frozenset({"payload"}), "mark": frozenset({"name"})}


def parse_outbound(data: str, stream_sid: str) -> Checked:
    """Check a text frame from the bridge as strictly as Twilio would.

    Returns the message when Twilio would still act on it (None when it would drop it) and
    the problems found. Never quotes payloads: problems end up in logs and reports.
    """
    msg, problems = load_outbound(data, _OUTBOUND_FIELDS, "Twilio")
    if msg is None:
        return None, problems
    event = msg["event"]
    if wrong := wrong_stream(msg, "streamSid", stream_sid, event):
        return None, problems + wrong
    if event == "clear":
        return Outbound("clear"), problems

    body = msg.get(event)
    if not isinstance(body, dict):
        problems.append(f"{event}: missing the {event!r} object")
        return None, problems
    problems += unexpected_fields(body, _BODY_FIELDS[event], event, inside=event)
    parsed, more = (
        checked_mark(body.get("name"), event)
        if event == "mark"
        else checked_media(body.get("payload"), event)
    )
    return parsed, problems + more


# --- the call ---------------------------------------------------------------------------------


class TwilioWire(Wire):
    """A Twilio media stream: `connected` then `start`, marks echoed (cleared ones too), `stop`."""

    provider = "twilio"
    answer_path = "/twilio/voice"
    checkpoint_acks_cleared = True

    @staticmethod
    def new_call_sid() -> str:
        return new_sid("CA")

    @staticmethod
    def new_account_sid() -> str:
        return new_sid("AC")

    @staticmethod
    def new_stream_sid() -> str:
        return new_sid("MZ")

    @classmethod
    async def answer(cls, session: aiohttp.ClientSession, url: str, token: str | None) -> Answer:
        call_sid, account_sid = cls.new_call_sid(), cls.new_account_sid()
        form = voice_webhook_form(call_sid, account_sid)
        stream_url, params = await fetch_twiml(session, url, form, token)
        return Answer(stream_url, params, call_sid, account_sid)

    def upgrade_headers(self, stream_url: str, auth_token: str | None) -> dict[str, str]:
        headers = {"User-Agent": "Twilio.TmeWs/1.0"}
        if auth_token:
            headers["X-Twilio-Signature"] = sign(auth_token, stream_url, {})
        return headers

    def preamble(self) -> list[str]:
        return [connected_message()]

    def start(self) -> str:
        return start_message(
            self.next_seq(), self.stream_sid, self.call_sid, self.account_sid, self.parameters
        )

    def media(self, chunk: int, offset_ms: int, payload_b64: str) -> str:
        return media_message(self.next_seq(), chunk, offset_ms, payload_b64, self.stream_sid)

    def dtmf(self, digit: str, offset_ms: int) -> str:
        return dtmf_message(self.next_seq(), self.stream_sid, digit)

    def played(self, name: str) -> str:
        return mark_message(self.next_seq(), self.stream_sid, name)

    def stop(self) -> str:
        return stop_message(self.next_seq(), self.stream_sid, self.call_sid, self.account_sid)

    def parse(self, data: str) -> Checked:
        return parse_outbound(data, self.stream_sid)


class TwilioCallEmulator(CallEmulator):
    """One emulated call leg on a Twilio media stream (see CallEmulator)."""

    wire_type = TwilioWire
