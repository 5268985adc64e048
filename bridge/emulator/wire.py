"""A phone provider's wire format, as the emulated call leg needs it, and the checks every
provider shares.

A provider's media stream (the messages it sends, numbered by it; how strictly it judges the
bridge's; how it acknowledges marks and clears) and its answer webhook are a `Wire`:
twilio_wire and plivo_wire each supply one, built from the pieces here (fetching and parsing
the answer document, judging outbound messages). Cheap per frame because a load test runs
hundreds of calls in one process: outbound messages are validated with orjson and set
arithmetic, and a message's fields are only listed when something is off.
"""

import binascii
import xml.etree.ElementTree as ET
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import aiohttp
import orjson

from bridge.errors import BridgeError, ProtocolError

FRAME_BYTES = 160  # 20 ms of 8 kHz mu-law
FRAME_SECONDS = 0.02
_WEBHOOK_TIMEOUT_S = 15.0  # what Twilio waits for a voice webhook; used for both providers


class CallFailed(BridgeError):
    """The emulated call could not be set up (bridge unreachable, upgrade refused, timeout)."""


class CallRefused(CallFailed):
    """The bridge answered the call busy (rejected it, or spoke a message and hung up) instead
    of streaming it: what admission does past capacity."""


def refusal(root: ET.Element, hangup_verbs: tuple[str, ...]) -> CallRefused | None:
    """A busy answer document (its first verb ends the call), as the error to raise, or None."""
    first = next(iter(root), None)
    last = root[-1] if len(root) else None
    if first is not None and first.tag in hangup_verbs:
        return CallRefused(f"the bridge refused the call: <{first.tag} "
                           f"reason={first.get('reason', '')!r}>")
    if last is not None and last.tag in hangup_verbs:
        spoken = " ".join((c.text or "").strip() for c in root if c is not last)[:200]
        return CallRefused(f"the bridge refused the call, saying {spoken!r}")
    return None


def describe(exc: BaseException) -> str:
    # aiohttp's reprs carry whole connection keys; a timeout's str() is empty.
    return str(exc) or type(exc).__name__


# --- the answer webhook ---------------------------------------------------------------------


@dataclass(slots=True)
class Answer:
    """What the bridge's answer webhook told the provider, and the ids the call rang with."""

    stream_url: str
    parameters: dict[str, str]  # sent back in the start message
    call_sid: str
    account_sid: str


async def fetch_document(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    headers: dict[str, str],
    form: dict[str, str] | None,
    what: str,
) -> str:
    """Request a webhook like a provider does; its body, or CallFailed / ProtocolError."""
    try:
        async with session.request(
            method,
            url,
            data=form,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=_WEBHOOK_TIMEOUT_S),
        ) as resp:
            body = await resp.text()
            status = resp.status
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise CallFailed(f"{what} {url} unreachable: {describe(exc)}") from exc
    if status != 200:
        raise ProtocolError(f"{what} {url} answered HTTP {status}: {body[:200]}")
    return body


def xml_root(text: str, document: str) -> ET.Element:
    """The <Response> root of an answer document, or ProtocolError."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ProtocolError(f"the answer webhook did not answer {document} ({exc})") from exc
    if root.tag != "Response":
        raise ProtocolError(f"{document} root is <{root.tag}>, expected <Response>")
    return root


def check_stream_url(url: str, where: str) -> str:
    if not url.startswith(("wss://", "ws://")):
        raise ProtocolError(f"{where} {url!r} is not a WebSocket URL")
    return url


# --- checking what the bridge sends -----------------------------------------------------------


@dataclass(slots=True)
class Outbound:
    """A usable message from the bridge: media (decoded payload), mark (name) or clear.

    Provider-neutral: a Plivo playAudio is "media", a checkpoint "mark", a clearAudio "clear".
    """

    event: str
    payload: bytes = b""
    name: str = ""


Checked = tuple[Outbound | None, list[str]]  # the message if the provider would act on it


def load_outbound(
    data: str, fields: Mapping[str, frozenset[str]], provider: str
) -> tuple[dict[str, Any] | None, list[str]]:
    """Decode a text frame whose event must be a key of `fields` (its allowed top-level keys).

    Returns the object (None when the provider would drop it) and the problems found so far.
    Never quotes payloads: problems end up in logs and reports.
    """
    try:
        msg = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None, [f"not JSON ({len(data)} characters)"]
    if not isinstance(msg, dict):
        return None, [f"a JSON {type(msg).__name__}, not an object"]
    event = msg.get("event")
    if not isinstance(event, str) or event not in fields:
        return None, [f"unknown event {event!r:.60} ({provider} accepts {', '.join(fields)})"]
    return msg, unexpected_fields(msg, fields[event], event)


def unexpected_fields(
    obj: dict[str, Any], allowed: frozenset[str], event: str, inside: str = ""
) -> list[str]:
    # keys() == frozenset is the cheap common case; the difference only when something is off.
    if obj.keys() == allowed or not (extra := obj.keys() - allowed):
        return []
    where = f" in {inside!r}" if inside else ""
    return [f"{event}: unexpected fields {sorted(extra)}{where}"]


def wrong_stream(msg: dict[str, Any], key: str, stream_id: str, event: str) -> list[str]:
    """The problem when a message names another stream (the provider then drops it)."""
    sid = msg.get(key)
    return [] if sid == stream_id else [f"{event}: {key} {sid!r:.60} is not this stream's"]


def checked_mark(name: object, event: str) -> Checked:
    if not isinstance(name, str) or not name:
        return None, [f"{event}: name must be a non-empty string"]
    return Outbound("mark", name=name), []


def checked_media(payload: object, event: str) -> Checked:
    """A base64 mu-law payload, as the provider would play it."""
    if not isinstance(payload, str) or not payload:
        return None, [f"{event}: empty or missing payload"]
    try:
        audio = binascii.a2b_base64(payload, strict_mode=True)
    except ValueError:  # binascii.Error, or non-ASCII text
        return None, [f"{event}: payload is not valid base64 ({len(payload)} characters)"]
    if len(audio) % FRAME_BYTES:
        # Still played, but a partial frame means the sender's framing is off.
        return Outbound("media", payload=audio), [
            f"{event}: payload of {len(audio)} bytes is not a multiple of 160"
        ]
    return Outbound("media", payload=audio), []


# --- the provider interface -------------------------------------------------------------------


class Wire(ABC):
    """One media stream's wire format on the provider's side: the messages it sends (numbered
    by it), its verdict on the bridge's, and how it acknowledges marks and clears."""

    provider: ClassVar[str]  # "twilio", "plivo": the report's provider
    answer_path: ClassVar[str]  # the bridge's answer webhook route (then a user path)
    # Whether a clear acknowledges the marks whose audio it dropped (see PlayoutBuffer).
    checkpoint_acks_cleared: ClassVar[bool]

    def __init__(
        self, call_sid: str | None, account_sid: str | None, parameters: dict[str, str] | None
    ) -> None:
        self.call_sid = call_sid or self.new_call_sid()
        self.account_sid = account_sid or self.new_account_sid()
        self.stream_sid = self.new_stream_sid()
        self.parameters = parameters or {}
        self.seq = 0  # the sequenceNumber of the last numbered message sent

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    @staticmethod
    @abstractmethod
    def new_call_sid() -> str: ...

    @staticmethod
    @abstractmethod
    def new_account_sid() -> str: ...

    @staticmethod
    @abstractmethod
    def new_stream_sid() -> str: ...

    @classmethod
    @abstractmethod
    async def answer(cls, session: aiohttp.ClientSession, url: str, token: str | None) -> Answer:
        """Ring the bridge: fetch and parse the answer document at `url`."""

    @abstractmethod
    def upgrade_headers(self, stream_url: str, auth_token: str | None) -> dict[str, str]:
        """Headers of the WebSocket upgrade to `stream_url`, signed when a token is given."""

    def preamble(self) -> list[str]:
        """Messages before `start`, which are not numbered."""
        return []

    @abstractmethod
    def start(self) -> str: ...

    @abstractmethod
    def media(self, chunk: int, offset_ms: int, payload_b64: str) -> str:
        """Caller audio number `chunk` (from 1), `offset_ms` after the start."""

    @abstractmethod
    def dtmf(self, digit: str, offset_ms: int) -> str: ...

    @abstractmethod
    def played(self, name: str) -> str:
        """The acknowledgement of mark `name`: its audio has played (or, Twilio, was cleared)."""

    def cleared(self) -> str | None:
        """The answer to a clear, if the provider sends one."""
        return None

    def stop(self) -> str | None:
        """The message that ends the stream, if the provider sends one before closing."""
        return None

    @abstractmethod
    def parse(self, data: str) -> Checked:
        """Judge a text frame from the bridge as strictly as the provider would."""

