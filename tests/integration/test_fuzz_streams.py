"""Hostile provider streams against the real bridge (issue 14): structure-aware mutations of valid
Twilio and Plivo messages, sent over real media streams, each opened the way a provider opens it
(answer webhook, then the stream URL that answer returned: one answer per stream).

For every stream the test asserts that
- no exception escapes the bridge: no `stream_message_handler_failed` (bridge/web/media_socket.py),
  no other error-level log, no "Task exception was never retrieved";
- the pure parser (`bridge.telephony.<provider>.parse_message`) raises nothing but ProtocolError;
- the call's `malformed_messages` equals what the pure parser refuses among the same frames sent
  after `start` (plus the valid duplicate starts, which the session counts too), and the
  session's warnings agree;
and, once per provider, that memory stays bounded after hundreds of huge DTMF/id messages and that
a normal emulated call on the same bridge still hears speech.

Seeded: the seed is printed (and named in every failure); BRIDGE_FUZZ_SEED=<int> replays a run,
BRIDGE_FUZZ_CASES=<n> changes the number of fuzzed frames per provider (default 30,000: 60,000 a
run, ~330 MiB of frames, in ~20 s on two cores).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import gc
import json
import os
import random
import secrets
import time
import traceback
import tracemalloc
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import aiohttp
import numpy as np
import orjson
import pytest
import structlog

from bridge.audio.mulaw import ulaw2lin
from bridge.emulator.runner import emulator_class, run_call
from bridge.emulator.wire import Wire
from bridge.errors import ProtocolError
from bridge.telephony import events as ev
from bridge.telephony import plivo, twilio
from bridge.telephony.jsonfields import MAX_MESSAGE_CHARS
from bridge.web.streams import MAX_PROVIDER_MESSAGE
from tests.servers import RunningBridge, make_settings, running_bridge, wait_ended
from tests.speech import assert_is_speech

SEED = int(os.environ.get("BRIDGE_FUZZ_SEED") or secrets.randbits(32))
CASES = int(os.environ.get("BRIDGE_FUZZ_CASES") or 30_000)
# Many frames per real stream: a stream costs an answer, an upgrade and a greeting's synthesis.
STREAMS = 12
# After 200 DTMF digits of 120,000 characters and 300 start/mark messages with ids as long, all
# refused, plus 1,000 valid digits: the memory the bridge still holds once the call has ended,
# and the size of its trace. Without the codec's bounds the 200 digits alone would sit in the
# trace as 24 MB (issue 14: "+100 MiB held after 100 messages of 1 MB digits").
MAX_HELD_BYTES = 4 * 1024 * 1024
MAX_TRACE_BYTES = 64 * 1024
STREAM_TIMEOUT_S = 60.0

PARSERS: dict[str, Callable[[str | bytes], ev.InboundEvent]] = {
    "twilio": twilio.parse_message,
    "plivo": plivo.parse_message,
}
Frame = str | bytes  # a text frame, or a binary one


def _seeded(what: str) -> str:
    return f"{what} (seed {SEED}; replay with BRIDGE_FUZZ_SEED={SEED})"


# --- the mutator ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Raw:
    """JSON text to splice in as a value: what json.dumps cannot write (5,000-digit numbers,
    NaN, nesting deeper than its recursion allows, invalid literals)."""

    text: str


ANSI = ["\x1b[31mred\x1b[0m", "\x1b]0;owned\x07", "\x1b[2J\x1b[H", "\x1b[6n", "\x9b31m"]
CONTROL = ["\x00", "\r\nforged log line", "\x7f", "\u202ereversed", "\u2028", "\t", "\x08" * 8]
UNICODE = ["é", "²", "٣", "\U0001f4de", "\ufeff", "\uffff", "Ω" * 50]
BAD_BASE64 = ["%%%", "AAA", "AAAAA", "AA=A", "A===", "AA AA", "AAAA\n", "é+Jh", "-_-_", "=", ""]
DTMF_KEYS = "0123456789*#ABCD"
BAD_DIGITS = ["", "11", "a", "d", "E", "٣", " 1", "1\n", "#*", "10"]
EVENTS = ["media", "start", "dtmf", "mark", "connected", "playedStream", "played",
          "clearedAudio", "clear", "checkpoint", "playAudio", "stop", "", "MEDIA", "media ",
          "médía", "Start", "stopped"]


class Mutator:
    """Random frames for one provider: mutations of its valid messages, mostly hostile."""

    def __init__(self, rng: random.Random, provider: str) -> None:
        self.rng = rng
        self.provider = provider
        self.raws: dict[str, str] = {}
        wire = emulator_class(provider).wire_type(None, None, {"user": "default"})
        frame = base64.b64encode(bytes(range(160))).decode()
        self.valid: list[dict[str, Any]] = [
            orjson.loads(wire.start()),
            orjson.loads(wire.media(1, 0, frame)),
            orjson.loads(wire.dtmf("1", 0)),
            orjson.loads(wire.played("utt-9")),
        ]
        if provider == "twilio":
            self.valid += [orjson.loads(m) for m in wire.preamble()]
            stop = wire.stop()  # None only for a provider without the message
            assert stop is not None
            self.valid.append(orjson.loads(stop))
        else:
            cleared = wire.cleared()
            assert cleared is not None
            self.valid.append(orjson.loads(cleared))
            self.valid.append({"event": "played", "streamId": wire.stream_sid, "name": "utt-9"})
            self.valid.append({"event": "stop", "sequenceNumber": 9})

    # -- values --
    def huge_text(self) -> str:
        n = self.rng.choice([128, 129, 4300, 5000, 87_384, 87_388]) if self.rng.random() < 0.3 \
            else int(10 ** self.rng.uniform(2, 5.05))  # up to ~112,000 characters
        return self.rng.choice("x19A=\x1b") * n

    def value(self, key: object = None) -> Any:
        r = self.rng
        roll = r.random()
        if key == "payload" and roll < 0.5:
            return r.choice([
                r.choice(BAD_BASE64),
                base64.b64encode(r.randbytes(r.choice([0, 1, 2, 159, 160, 161, 8000]))).decode(),
                base64.b64encode(r.randbytes(r.choice([65_536, 65_537]))).decode(),
                base64.b64encode(r.randbytes(160)).decode() + r.choice(["=", "*", "\x1b"]),
            ])
        if key == "digit" and roll < 0.5:
            return r.choice([r.choice(DTMF_KEYS), r.choice(BAD_DIGITS), r.choice(ANSI),
                             DTMF_KEYS[r.randrange(16)] * r.choice([2, 100, 100_000])])
        if key in ("sampleRate", "sequenceNumber", "chunk", "timestamp") and roll < 0.5:
            return r.choice(["8000", "9" * 18, "9" * 19, "9" * 4301, "9" * 5000, "-1", "0x1F40",
                             " 8000", "8000\n", "٨٠٠٠", Raw("9" * 5000), Raw("1e999"),
                             Raw("-0"), 2**63, -(2**63) - 1, 10**30, 0, -1, 8000.5])
        kind = r.randrange(12)
        if kind == 0:
            return r.choice([None, True, False, 0, -1, 1.5, 2**63, -(2**63) - 1, 10**30])
        if kind == 1:
            return r.choice([[], {}, [1, "a"], {"a": {"b": []}}, ["inbound"] * r.randrange(20)])
        if kind == 2:
            return self.huge_text()
        if kind == 3:
            return r.choice(ANSI) + r.choice(["CA", "", "utt-1"]) * r.randrange(3)
        if kind == 4:
            return "id" + r.choice(CONTROL)
        if kind == 5:
            return r.choice(UNICODE)
        if kind == 6:
            return r.choice(["9" * 5000, "9" * 4301, "9" * 19, "1" * 18, "0", "-5", "1e5"])
        if kind == 7:
            depth = r.choice([10, 500, 1023, 1024, 1025, 3000, 20_000])
            return Raw(r.choice(["[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth]))
        if kind == 8:
            return Raw(r.choice(["NaN", "Infinity", "-Infinity", "9" * 5000, "1e400", "tru",
                                 "01", "1.", ".5", "+1", "0x10", "'x'", "undefined"]))
        if kind == 9:
            return "\ud800" if r.random() < 0.5 else "a\udfffb"  # lone surrogates
        if kind == 10:
            return {r.choice(["k", "", "\x1b[1m", "k" * 65]): r.choice(["v", "v" * 513, None])
                    for _ in range(r.choice([1, 5, 32, 33, 200]))}
        # A plausible value: an id just inside or past the bounds.
        return r.choice(["CA" + "0" * 32, "a" * 128, "a" * 129, "MZ-x_y.z:1", "utt-0", "inbound"])

    # -- structure --
    def paths(self, node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
        if isinstance(node, dict):
            for k, v in node.items():
                yield (*prefix, k)
                yield from self.paths(v, (*prefix, k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield (*prefix, i)
                yield from self.paths(v, (*prefix, i))

    def message(self) -> dict[str, Any]:
        return json.loads(json.dumps(self.rng.choice(self.valid)))  # a deep copy

    def mutated(self) -> Any:
        r = self.rng
        msg = self.message()
        for _ in range(r.choice([1, 1, 1, 2, 3])):
            paths = list(self.paths(msg))
            op = r.randrange(6)
            if op <= 2 and paths:  # replace a value
                path = r.choice(paths)
                parent = self._at(msg, path[:-1])
                parent[path[-1]] = self.value(path[-1])
            elif op == 3 and paths:  # drop a field
                path = r.choice(paths)
                parent = self._at(msg, path[:-1])
                del parent[path[-1]]
            elif op == 4:  # add a field anywhere
                dicts = [msg] + [self._at(msg, p) for p in paths
                                 if isinstance(self._at(msg, p), dict)]
                target = r.choice(dicts)
                key = r.choice(["event", "extra", "\x1b[31m", "k" * r.choice([1, 65, 5000]),
                                "streamSid", "streamId", "digit", "name", "payload"])
                target[key] = self.value(key)
            else:  # another event, or a hostile one
                msg["event"] = r.choice(EVENTS) if r.random() < 0.7 else self.value("event")
        return msg

    def dumps(self, obj: Any) -> str:
        # Raw values become placeholders, then their text replaces the quoted placeholder.
        def default(value: object) -> str:
            raise TypeError(type(value).__name__)

        def swap(node: Any) -> Any:
            if isinstance(node, Raw):
                token = f"@@raw{len(self.raws)}@@"
                self.raws[token] = node.text
                return token
            if isinstance(node, dict):
                return {k: swap(v) for k, v in node.items()}
            if isinstance(node, list):
                return [swap(v) for v in node]
            return node

        self.raws.clear()
        text = json.dumps(swap(obj), ensure_ascii=self.rng.random() < 0.5, default=default)
        for token, raw in self.raws.items():
            text = text.replace(f'"{token}"', raw)
        return text

    def raw_edit(self, text: str) -> str:
        r = self.rng
        i = r.randrange(len(text) + 1)
        op = r.randrange(7)
        if op == 0:
            return text[:i]  # truncated
        if op == 1:
            return text[:i] + r.choice('{}[]",:\\\x00\x1b ') + text[i + 1:]
        if op == 2:
            return text[:i] + r.choice(ANSI + CONTROL + UNICODE) + text[i:]
        if op == 3:
            return "\ufeff" + text
        if op == 4:
            return text + r.choice(["}", "]", " x", "\n{}", text])
        if op == 5:  # a duplicate key: the last one wins, in orjson as in the spec's reading
            return text[:-1] + ', "event": ' + json.dumps(r.choice(EVENTS)) + "}" \
                if text.endswith("}") else text
        return text[: i // 2] + text[i:]

    def frame(self) -> Frame:
        r = self.rng
        roll = r.random()
        if roll < 0.10:  # valid messages in between (their events are still counted right)
            return self.dumps(self.message())
        if roll < 0.55:
            return self.dumps(self.mutated())
        if roll < 0.70:
            return self.raw_edit(self.dumps(self.rng.choice([self.message(), self.mutated()])))
        if roll < 0.75:
            return self.dumps(r.choice([[], [self.message()], "media", 1, None, True, 1.5,
                                        Raw(" "), Raw(""), Raw("[" * 2000 + "]" * 2000)]))
        if roll < 0.82:  # a binary frame: JSON, possibly with invalid UTF-8, or noise
            data = self.dumps(self.rng.choice([self.message(), self.mutated()])).encode(
                "utf-8", "surrogatepass")
            if r.random() < 0.5:
                i = r.randrange(len(data) + 1)
                data = data[:i] + r.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80",
                                            b"\xf4\x90\x80\x80"]) + data[i:]
            return data
        if roll < 0.86:
            return r.randbytes(r.choice([0, 1, 7, 160, 4096, 65_536]))
        if roll < 0.90:  # random text
            return "".join(chr(r.randrange(32, 0x2FFF)) for _ in range(r.randrange(1, 400)))
        if roll < 0.91:  # past the codec's message bound, within the socket's
            msg = self.message()
            msg["pad"] = "x" * r.choice([MAX_MESSAGE_CHARS, r.randrange(MAX_MESSAGE_CHARS, 300_000),
                                         MAX_PROVIDER_MESSAGE - 100_000])
            return self.dumps(msg)
        # Hostile duplicates and floods of the fields the bridge keeps.
        msg = self.message()
        field = r.choice(["digit", "name", "callSid", "callId", "streamSid", "streamId"])
        body = next((v for v in msg.values() if isinstance(v, dict)), msg)
        body[field] = r.choice(ANSI) + "9" * r.choice([129, 5000, 120_000])
        return self.dumps(msg)

    @staticmethod
    def _at(node: Any, path: tuple[Any, ...]) -> Any:
        for key in path:
            node = node[key]
        return node


def sendable(frame: Frame) -> Frame | None:
    """The frame as it can travel: text that cannot be UTF-8 (lone surrogates) goes binary,
    and nothing past the socket's cap (the bridge would close the stream, not parse it)."""
    if isinstance(frame, str):
        try:
            size = len(frame.encode())
        except UnicodeEncodeError:
            frame = frame.encode("utf-8", "surrogatepass")
            size = len(frame)
    else:
        size = len(frame)
    return frame if size < MAX_PROVIDER_MESSAGE - 1024 else None


def fuzz_frames(rng: random.Random, provider: str, count: int) -> tuple[list[Frame], list[bool]]:
    """`count` frames that the bridge must all survive, and for each whether its session counts
    it as malformed: those the pure parser refuses, and valid starts (the stream has one
    already). Frames that parse to a stop are left out: the session reads nothing after one."""
    mutator = Mutator(rng, provider)
    parse = PARSERS[provider]
    frames: list[Frame] = []
    malformed: list[bool] = []
    escapes: list[str] = []
    while len(frames) < count:
        frame = sendable(mutator.frame())
        if frame is None:
            continue
        try:
            event = parse(frame)
        except ProtocolError:
            malformed.append(True)
        except Exception as exc:  # a finding, asserted below: the parser must only refuse
            escapes.append(f"{type(exc).__name__}: {exc!s:.200} for {frame[:120]!r}")
            continue
        else:
            if isinstance(event, ev.StreamStopped):
                continue
            malformed.append(isinstance(event, ev.StreamStarted))
        frames.append(frame)
    assert not escapes, _seeded(f"{provider}.parse_message raised past ProtocolError: {escapes}")
    return frames, malformed


# --- the streams ------------------------------------------------------------------------------


@dataclasses.dataclass
class Stream:
    """One media stream opened like the provider opens it: answer webhook, then its URL."""

    http: aiohttp.ClientSession
    wire: Wire
    ws: aiohttp.ClientWebSocketResponse
    drain: asyncio.Task[int]

    @classmethod
    async def open(cls, http: aiohttp.ClientSession, bridge: RunningBridge,
                   provider: str) -> Stream:
        wire_type = emulator_class(provider).wire_type
        answer = await wire_type.answer(http, bridge.url + wire_type.answer_path, None)
        wire = wire_type(answer.call_sid, answer.account_sid, answer.parameters)
        ws = await http.ws_connect(answer.stream_url,
                                   headers=wire.upgrade_headers(answer.stream_url, None),
                                   compress=0)
        stream = cls(http, wire, ws, asyncio.create_task(cls._drain(ws)))
        for text in wire.preamble():
            await ws.send_str(text)
        await ws.send_str(wire.start())
        return stream

    @staticmethod
    async def _drain(ws: aiohttp.ClientWebSocketResponse) -> int:
        # Reads what the bridge sends (greeting audio, marks) so that it never blocks on us.
        count = 0
        async for _ in ws:
            count += 1
        return count

    async def send(self, frame: Frame) -> None:
        if isinstance(frame, bytes):
            await self.ws.send_bytes(frame)
        else:
            await self.ws.send_str(frame)

    async def hang_up(self) -> None:
        if (text := self.wire.stop()) is not None:
            await self.ws.send_str(text)
        await self.ws.close()
        await self.drain


# The one escape the bridge still has, and whose fix is the lead's pending work in
# bridge/call/session.py (bounding a call's tasks): a call's sender task that dies writing to a
# socket the provider just closed is dropped from the task set once done, so nobody retrieves
# its ClientConnectionResetError. Only that exact escape is expected to fail; any other fails.


@dataclasses.dataclass
class Escapes:
    """What the bridge let out while a block ran: structlog events (all captured) and the
    loop's unhandled exceptions."""

    logs: list[MutableMapping[str, Any]]
    unhandled: list[tuple[BaseException | None, str]] = dataclasses.field(default_factory=list)



@contextmanager
def no_escaped_exceptions() -> Iterator[Escapes]:
    """Captures structlog's events and the loop's unhandled exceptions; when the block ends,
    fails on any escape."""
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    with structlog.testing.capture_logs() as logs:
        escapes = Escapes(logs)

        def unhandled(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            exc = context.get("exception")
            where = "".join(traceback.format_exception(exc)) if exc is not None else ""
            escapes.unhandled.append((exc, f"{context.get('message')}: {exc!r}\n{where}"))

        loop.set_exception_handler(unhandled)
        try:
            yield escapes
            gc.collect()  # "Task exception was never retrieved" is reported when a task is freed
        finally:
            loop.set_exception_handler(previous)
    failed = [e for e in logs if e.get("event") == "stream_message_handler_failed"]
    assert not failed, _seeded(f"a message handler raised: {failed[:3]}")
    errors = [e for e in logs if e.get("log_level") in ("error", "critical", "exception")]
    assert not errors, _seeded(f"error logs during the fuzz: {errors[:3]}")
    escaped = [where for _, where in escapes.unhandled]
    assert not escaped, _seeded(f"unhandled exceptions: {escaped[:3]}")


def malformed_logged(logs: list[MutableMapping[str, Any]], call_id: str) -> int:
    return sum(1 for e in logs if e.get("call_id") == call_id
               and e.get("event") in ("malformed_provider_message", "duplicate_start"))


def fuzz_settings() -> Any:
    settings = make_settings()
    # A short greeting and no DTMF replies: valid digits among the fuzz must not queue a
    # synthesis each.
    return settings.replace(agent=dataclasses.replace(
        settings.agent, greeting="Hello from the fuzzed bridge.", dtmf={}))


async def _fuzz_stream(http: aiohttp.ClientSession, bridge: RunningBridge, provider: str,
                       frames: list[Frame], expected: int, logs: list[MutableMapping[str, Any]],
                       ending: bytes | None = None) -> dict[str, Any]:
    """Open a stream, send `start` then `frames`, hang up (or end with the broken `ending`
    frame); the ended call's trace, once its counts are checked against `expected`."""
    async with asyncio.timeout(STREAM_TIMEOUT_S):
        stream = await Stream.open(http, bridge, provider)
        for frame in frames:
            await stream.send(frame)
        if ending is None:
            await stream.hang_up()
        else:
            # Broken at the WebSocket level: the bridge closes the stream, parses nothing.
            await stream.ws.send_frame(ending, aiohttp.WSMsgType.TEXT)
            await stream.drain
            await stream.ws.close()
        trace = await wait_ended(bridge, stream.wire.call_sid)
    call = stream.wire.call_sid
    assert trace["malformed_messages"] == expected, _seeded(
        f"{provider} call {call}: the bridge counted {trace['malformed_messages']} malformed "
        f"messages, the pure parser refuses {expected} of its {len(frames)} frames")
    assert malformed_logged(logs, call) == expected, _seeded(f"{call}: warnings disagree")
    if ending is not None:
        assert trace["end_reason"] == "socket closed", trace["end_reason"]
    return trace


@pytest.mark.timeout(180)
@pytest.mark.parametrize("provider", ["twilio", "plivo"])
async def test_fuzzed_streams_leave_the_bridge_counting_and_speaking(tts, provider: str) -> None:
    print(f"fuzz seed {SEED} (replay: BRIDGE_FUZZ_SEED={SEED}), {CASES} frames for {provider}")
    rng = random.Random(f"{SEED}-{provider}")
    began = time.perf_counter()
    sent = refused = size = 0
    per_stream = -(-CASES // STREAMS)
    # The last two streams end broken below the JSON: a text frame that is not UTF-8, then
    # one past the socket's cap.
    endings = {STREAMS - 2: b"\xff\xfe{}", STREAMS - 1: b"x" * (MAX_PROVIDER_MESSAGE + 1)}
    async with running_bridge(fuzz_settings(), tts_url=tts.url) as bridge, \
            aiohttp.ClientSession() as http:
        with no_escaped_exceptions() as escapes:
            for i in range(STREAMS):
                # Made stream by stream: a stream's frames take ~30 MiB.
                frames, malformed = fuzz_frames(rng, provider, min(per_stream, CASES - sent))
                await _fuzz_stream(http, bridge, provider, frames, sum(malformed),
                                   escapes.logs, endings.get(i))
                sent += len(frames)
                refused += sum(malformed)
                size += sum(len(f) for f in frames)
            # The greeting, the only speech that asks for no credentials.
            report = await run_call(bridge.url, provider=provider, max_seconds=40)
            assert report.ok, (report.error, report.protocol_violations)
            assert_is_speech(ulaw2lin(report.recording).astype(np.float32) / 32768, 8000)
            assert (await wait_ended(bridge, report.call_sid))["malformed_messages"] == 0
    assert sent == CASES
    print(f"{provider}: {sent} frames ({size / 2**20:.0f} MiB, {refused} counted malformed) "
          f"in {STREAMS} streams, then a call that heard speech: {time.perf_counter() - began:.1f}"
          " s")


def _count(provider: str, frames: list[Frame]) -> int:
    parse = PARSERS[provider]
    count = 0
    for frame in frames:
        try:
            count += isinstance(parse(frame), ev.StreamStarted)
        except ProtocolError:
            count += 1
    return count


@pytest.mark.timeout(120)
@pytest.mark.parametrize("provider", ["twilio", "plivo"])
async def test_huge_digits_and_ids_leave_memory_bounded(tts, provider: str) -> None:
    mutator = Mutator(random.Random(f"{SEED}-{provider}-memory"), provider)
    dtmf = next(m for m in mutator.valid if m["event"] == "dtmf")
    start = next(m for m in mutator.valid if m["event"] == "start")
    played = next(m for m in mutator.valid if m["event"] in ("mark", "playedStream"))
    huge = "9" * 120_000  # just inside the codec's message bound: the field checks refuse it
    frames: list[Frame] = []
    for i in range(200):
        dtmf["dtmf"]["digit"] = huge + str(i)
        frames.append(orjson.dumps(dtmf).decode())
    for field in ("callSid", "callId", "streamSid", "streamId"):
        for i in range(50):
            start["start"][field] = huge + str(i)
            frames.append(orjson.dumps(start).decode())
    for i in range(100):
        if "mark" in played:
            played["mark"]["name"] = huge + str(i)
        else:
            played["name"] = huge + str(i)
        frames.append(orjson.dumps(played).decode())
    for _ in range(20):  # whole messages far past the codec's bound, just inside the socket's
        dtmf["dtmf"]["digit"] = "9" * (MAX_PROVIDER_MESSAGE - 1000)
        frames.append(orjson.dumps(dtmf).decode())
    for i in range(1000):  # valid digits: what the trace keeps
        dtmf["dtmf"]["digit"] = "0123456789*#ABCD"[i % 16]
        frames.append(orjson.dumps(dtmf).decode())
    expected = _count(provider, frames)
    assert expected == len(frames) - 1000

    async with running_bridge(fuzz_settings(), tts_url=tts.url) as bridge, \
            aiohttp.ClientSession() as http:
        with no_escaped_exceptions() as escapes:
            # A first stream warms every cache (pool connection, voice, greeting), so what the
            # second one leaves behind is what a call holds.
            await _fuzz_stream(http, bridge, provider, frames[:10], 10, escapes.logs)
            gc.collect()
            tracemalloc.start()
            try:
                trace = await _fuzz_stream(http, bridge, provider, frames, expected,
                                           escapes.logs)
                del frames
                escapes.logs.clear()  # the captured warnings are the test's, not the bridge's
                gc.collect()
                held, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
    trace_bytes = len(orjson.dumps(trace))
    print(f"{provider}: held {held / 2**20:.2f} MiB after the call (peak {peak / 2**20:.1f} MiB),"
          f" trace {trace_bytes} bytes, {len(trace['dtmf'])} digits kept of 1000 sent")
    assert held < MAX_HELD_BYTES, _seeded(f"{held} bytes still held after the call")
    assert trace_bytes < MAX_TRACE_BYTES, trace_bytes
    assert set(trace["dtmf"]) <= set("0123456789*#ABCD")
