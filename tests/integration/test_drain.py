"""A bridge drains on SIGTERM (issue 18, part 4) and notices silent peers, on real servers: our
TTS server (Piper), the bridge in-process (its Drainer signalled as the signal handler does) and
as a real `python -m bridge serve` process sent real signals, and emulated carriers."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from structlog.testing import capture_logs

from bridge.audio.mulaw import ulaw2lin
from bridge.emulator.plivo_wire import fetch_answer_xml
from bridge.emulator.twilio_wire import TwilioCallEmulator, TwilioWire, fetch_twiml
from bridge.emulator.wire import CallRefused
from bridge.settings import Settings
from bridge.web.drain import Drainer
from tests.servers import DEFAULT_TOKEN, make_settings, running_bridge, wait_ended
from tests.speech import assert_is_speech
from tests.stalled_peer import StalledPeer

REPO = Path(__file__).resolve().parents[2]
OPERATOR = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}
GREETING = ("Thank you for calling the bridge. This greeting is long on purpose, so that the "
            "drain has to cut it short. It goes on for several sentences. And then some more, "
            "and then more again, until the call is over.")
GOODBYE = make_settings().call.drain_goodbye  # the default one


def drain_settings(greeting: str = GREETING, **call: Any) -> Settings:
    settings = make_settings()
    return settings.replace(agent=dataclasses.replace(settings.agent, greeting=greeting),
                            call=dataclasses.replace(settings.call, **call))


async def twilio_call(http: aiohttp.ClientSession, bridge_url: str, call_sid: str
                      ) -> TwilioCallEmulator:
    stream_url, params = await fetch_twiml(http, f"{bridge_url}/twilio/voice",
                                           {"CallSid": call_sid}, None)
    call = TwilioCallEmulator(http, stream_url, call_sid=call_sid, parameters=params)
    await call.connect(greetings=1)
    async with asyncio.timeout(20):
        await call.wait_first_media()
    return call


def assert_heard_the_goodbye(call: TwilioCallEmulator, trace: dict[str, Any]) -> None:
    """The call's last utterance is the drain's goodbye, heard to its mark: its audio, the end
    of what the caller got, is speech."""
    goodbye = trace["utterance_traces"][-1]
    assert (goodbye["text"], goodbye["outcome"]) == (GOODBYE, "played")
    audio = call.recording[-round(goodbye["audio_seconds"] * 8000):]
    assert len(audio) > 8000  # over a second of it
    assert_is_speech(ulaw2lin(bytes(audio)).astype(np.float32) / 32768, 8000)


def refused_draining(exposition: str, provider: str) -> float:
    line = f'bridge_calls_refused_total{{provider="{provider}",reason="draining"}} '
    values = [float(row[len(line):]) for row in exposition.splitlines() if row.startswith(line)]
    return values[0] if values else 0.0


async def test_a_drain_turns_not_ready_refuses_new_calls_lets_one_end_and_ends_the_other(tts):
    deadline_s = 3.0
    settings = drain_settings(drain_deadline_s=deadline_s)
    async with running_bridge(settings, tts_url=tts.url) as bridge, \
            aiohttp.ClientSession() as http:
        ending, staying = (await twilio_call(http, bridge.url, "CAends"),
                           await twilio_call(http, bridge.url, "CAstays"))
        async with http.get(f"{bridge.url}/api/ready") as ready:
            assert ready.status == 200 and (await ready.json())["status"] == "ready"
        drainer = Drainer(bridge.context)
        draining = asyncio.create_task(drainer.run())
        loop = asyncio.get_running_loop()
        drainer.signalled()  # what SIGTERM calls
        signalled_at = loop.time()

        async with http.get(f"{bridge.url}/api/ready") as ready:
            assert ready.status == 503
            assert await ready.json() == {"status": "draining", "live_calls": 2}
        async with http.get(f"{bridge.url}/health") as health:
            assert health.status == 200  # alive: liveness must not restart a draining bridge
        with pytest.raises(CallRefused, match="Reject reason='busy'"):
            await fetch_twiml(http, f"{bridge.url}/twilio/voice", {"CallSid": "CAlate"}, None)
        with pytest.raises(CallRefused, match="Hangup reason='busy'"):
            await fetch_answer_xml(http, f"{bridge.url}/plivo/answer",
                                   {"CallUUID": "late-uuid"}, None)
        async with http.get(f"{bridge.url}/metrics", headers=OPERATOR) as metrics:
            exposition = await metrics.text()
        assert (refused_draining(exposition, "twilio"), refused_draining(exposition, "plivo")) \
            == (1.0, 1.0)

        await ending.stop()  # this caller hangs up before the deadline
        ended = await wait_ended(bridge, "CAends")
        assert loop.time() < signalled_at + deadline_s  # (else the test proves nothing)
        async with asyncio.timeout(deadline_s + settings.call.mark_timeout_s + 5):
            await staying.wait_closed()
            await draining
        closed_at = loop.time()
        stayed = await wait_ended(bridge, "CAstays")

    assert ended["end_reason"] == "stop"
    assert GOODBYE not in [u["text"] for u in ended["utterance_traces"]]
    assert stayed["end_reason"] == "drained"
    assert stayed["utterance_traces"][0]["outcome"] == "interrupted"  # cut for the goodbye
    assert_heard_the_goodbye(staying, stayed)
    assert staying.close_reason == "the bridge closed the media stream (code 1000)"
    assert closed_at - signalled_at >= deadline_s  # it had until the deadline
    assert bridge.context.drain.phase.value == "done"


async def test_a_peer_that_stopped_reading_holds_nobody_else_and_is_cut_off(tts):
    # Past its send queue's fill (about 80 KB, some 9 s of audio on loopback): the stalled
    # peer's sender waits on a full queue when the drain ends the calls.
    deadline_s = 12.0
    settings = drain_settings(greeting=" ".join([GREETING] * 3), drain_deadline_s=deadline_s)
    mark_timeout_s = settings.call.mark_timeout_s  # what a goodbye may take to be heard
    async with running_bridge(settings, tts_url=tts.url) as bridge, \
            aiohttp.ClientSession() as http:
        stream_url, params = await fetch_twiml(http, f"{bridge.url}/twilio/voice",
                                               {"CallSid": "CAstalled"}, None)
        stalled = StalledPeer(stream_url, "CAstalled", params)
        await stalled.connect()
        calls = [await twilio_call(http, bridge.url, f"CAreads{i}") for i in range(2)]
        drainer = Drainer(bridge.context)
        loop = asyncio.get_running_loop()
        with capture_logs() as logs:
            draining = asyncio.create_task(drainer.run())
            drainer.signalled()
            ends_at = loop.time() + deadline_s
            async with asyncio.timeout(deadline_s + mark_timeout_s + 2):
                await asyncio.gather(*(call.wait_closed() for call in calls))
            readers_closed_at = loop.time()
            async with asyncio.timeout(bridge.context.drain.longest_s + 2):
                await stalled.cut.wait()
                await draining
            cut_at = loop.time()
        traces = [await wait_ended(bridge, call.call_sid) for call in calls]
        stalled_trace = await wait_ended(bridge, "CAstalled")
        await stalled.close()

    for call, trace in zip(calls, traces, strict=True):
        assert trace["end_reason"] == "drained"
        assert_heard_the_goodbye(call, trace)
    # The readers closed within their own goodbye, before the stalled peer's could time out.
    assert readers_closed_at < ends_at + mark_timeout_s
    # The stalled one: its goodbye timed out, its close was not answered: cut off at the bound.
    assert stalled_trace["end_reason"] == "drained"
    close_s = bridge.context.drain.close_s  # the goodbye's close, then the drain's own
    assert ends_at + mark_timeout_s <= cut_at <= ends_at + mark_timeout_s + 2 * close_s + 0.5
    closing = [e for e in logs if e["event"] == "closing_streams"]
    assert [(e["streams"], e["backed_up"]) for e in closing] == [(1, 1)]  # its queue was full
    assert [e["event"] for e in logs].count("call") == 3  # every call filed its log line


async def test_a_stream_whose_peer_sends_nothing_ends_inactive_and_a_talking_one_lives_on(tts):
    timeout_s = 0.5
    settings = drain_settings(greeting="Hello, this greeting lasts a few seconds.",
                              inactivity_timeout_s=timeout_s)
    async with running_bridge(settings, tts_url=tts.url) as bridge, \
            aiohttp.ClientSession() as http:
        talking = await twilio_call(http, bridge.url, "CAtalks")
        stream_url, params = await fetch_twiml(http, f"{bridge.url}/twilio/voice",
                                               {"CallSid": "CAsilent"}, None)
        wire = TwilioWire("CAsilent", None, params)
        async with http.ws_connect(stream_url) as silent:
            for text in (*wire.preamble(), wire.start()):
                await silent.send_str(text)
            opened_at = asyncio.get_running_loop().time()
            async with asyncio.timeout(timeout_s * 10):
                async for _ in silent:  # the greeting, until the bridge drops the stream
                    pass
            lived_s = asyncio.get_running_loop().time() - opened_at
        trace = await wait_ended(bridge, "CAsilent")
        async with asyncio.timeout(20):
            await talking.wait_for_marks(1)  # its greeting, seconds: many timeouts long
        assert "CAtalks" in bridge.context.registry.live
        await talking.stop()
        talked = await wait_ended(bridge, "CAtalks")
    assert trace["end_reason"] == "inactive"
    assert timeout_s <= lived_s < timeout_s * 1.25 + 0.5  # checked every quarter timeout
    assert talked["end_reason"] == "stop"


# -- the real process ---------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:  # freed before the child binds it: a tiny race on loopback
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class BridgeProcess:
    """`python -m bridge serve` on a free port; its output (JSON log lines) read as it comes."""

    def __init__(self, proc: asyncio.subprocess.Process, url: str) -> None:
        self.proc = proc
        self.url = url
        self.lines: list[str] = []
        self._line = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, tmp_path: Path, tts_url: str, **env: str) -> BridgeProcess:
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        base = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "serve", cwd=REPO,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**base, "BRIDGE_HOST": "127.0.0.1", "BRIDGE_PORT": str(port),
                 "BRIDGE_PUBLIC_URL": url,
                 "BRIDGE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'bridge.db'}",
                 "BRIDGE_ALLOW_UNSIGNED_WEBHOOKS": "true", "BRIDGE_SILMA_ENDPOINT": tts_url,
                 "BRIDGE_DEFAULT_USER_TOKEN": DEFAULT_TOKEN, "BRIDGE_LOG_FORMAT": "json",
                 "BRIDGE_AGENT_GREETING": GREETING, "PYTHONUNBUFFERED": "1", **env})
        bridge = cls(proc, url)
        try:
            await bridge.wait_for(lambda line: line.startswith("bridge listening on"), 30)
        except TimeoutError:
            proc.kill()
            raise AssertionError("the bridge did not start:\n"
                                 + "\n".join(bridge.lines[-20:])) from None
        return bridge

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            async with self._line:
                self.lines.append(raw.decode(errors="replace").rstrip())
                self._line.notify_all()

    async def wait_for(self, match: Callable[[str], bool], timeout_s: float) -> None:
        """Until the process has written a line that `match`es."""
        async with asyncio.timeout(timeout_s), self._line:
            await self._line.wait_for(lambda: any(match(line) for line in self.lines))

    async def wait_event(self, name: str, timeout_s: float = 5.0) -> None:
        await self.wait_for(lambda line: line.startswith("{") and f'"event": "{name}"' in line,
                            timeout_s)

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for line in self.lines:
            if line.startswith("{") and (event := json.loads(line)).get("event") == name:
                found.append(event)
        return found

    async def exited(self, timeout_s: float) -> int:
        async with asyncio.timeout(timeout_s):
            code = await self.proc.wait()
            await self._reader
        return code

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()


async def test_sigterm_to_the_process_says_goodbye_ends_the_call_and_exits_0(tts, tmp_path):
    deadline_s, mark_timeout_s = 2.0, 5.0
    bridge = await BridgeProcess.start(tmp_path, tts.url,
                                       BRIDGE_CALL_DRAIN_DEADLINE_S=str(deadline_s))
    try:
        async with aiohttp.ClientSession() as http:
            call = await twilio_call(http, bridge.url, "CAprocess")
            loop = asyncio.get_running_loop()
            bridge.proc.send_signal(signal.SIGTERM)
            signalled_at = loop.time()
            await bridge.wait_event("drain_started")
            async with http.get(f"{bridge.url}/api/ready") as ready:
                assert ready.status == 503
            with pytest.raises(CallRefused, match="busy"):
                await fetch_twiml(http, f"{bridge.url}/twilio/voice", {"CallSid": "CAno"}, None)
            code = await bridge.exited(deadline_s + mark_timeout_s + 10)
            exited_s = loop.time() - signalled_at
            await call.wait_closed()
    finally:
        bridge.kill()
    assert code == 0
    assert deadline_s <= exited_s < deadline_s + mark_timeout_s + 5
    [line] = bridge.events("call")
    assert (line["call_id"], line["end_reason"]) == ("CAprocess", "drained")
    goodbye = bridge.events("utterance")[-1]
    assert (goodbye["text"], goodbye["outcome"]) == (GOODBYE, "played")
    audio = call.recording[-round(goodbye["audio_seconds"] * 8000):]
    assert_is_speech(ulaw2lin(bytes(audio)).astype(np.float32) / 32768, 8000)
    assert call.close_reason == "the bridge closed the media stream (code 1000)"
    [finished] = bridge.events("drain_finished")
    assert (finished["live_at_signal"], finished["hung_up"]) == (1, 1)


async def test_a_second_sigterm_ends_the_calls_at_once(tts, tmp_path):
    bridge = await BridgeProcess.start(tmp_path, tts.url, BRIDGE_CALL_DRAIN_DEADLINE_S="300")
    try:
        async with aiohttp.ClientSession() as http:
            call = await twilio_call(http, bridge.url, "CAhurried")
            loop = asyncio.get_running_loop()
            bridge.proc.send_signal(signal.SIGTERM)
            await bridge.wait_event("drain_started")
            bridge.proc.send_signal(signal.SIGTERM)
            hurried_at = loop.time()
            code = await bridge.exited(30)
            exited_s = loop.time() - hurried_at
            await call.wait_closed()
    finally:
        bridge.kill()
    assert code == 0
    assert exited_s < 10  # the goodbye and the close, not the 300 s deadline
    [line] = bridge.events("call")
    assert line["end_reason"] == "drained"
    assert bridge.events("utterance")[-1]["text"] == GOODBYE

