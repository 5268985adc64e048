#!/usr/bin/env python3
"""The tenancy audit's probes (issue 14), re-run on the wire against a real bridge on 127.0.0.1.

Starts our TTS server (Piper) and a bridge in this process, with two tenants besides the
default user, and tries what an attacker would: control and read another tenant's calls, open
media streams without a webhook's answer, speak with another tenant's voice, flood a call with
huge DTMF messages and key presses, lock every user out from behind a proxy. Prints one row
per probe with the figure it measured. Uses only what any version of the bridge offers on the
wire (plus Store.create_user), so the same script measures the bridge before and after a change:

    .venv/bin/python scripts/probe_tenancy.py [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import socket
import stat
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.emulator.twilio_wire import TwilioCallEmulator, fetch_twiml
from bridge.settings import Settings, load_settings
from bridge.tts_server import app as tts_app
from bridge.web.app import create_app
from bridge.web.context import CONTEXT
from bridge.web.services import open_services

OPERATOR_TOKEN = "probe-operator-token"
TIMEOUT = aiohttp.ClientTimeout(total=30)


@dataclasses.dataclass
class Probe:
    finding: str
    probe: str
    figure: str


@contextlib.asynccontextmanager
async def servers(data: str, **settings: Any) -> AsyncIterator[tuple[str, web.AppRunner]]:
    base = load_settings(env={})
    tts = await tts_app.start(dataclasses.replace(base.tts_server, port=0), host="127.0.0.1",
                              port=0)
    await tts.service.loaded()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    known = {f.name for f in dataclasses.fields(Settings)}
    the: Settings = base.replace(
        public_url=url, silma=dataclasses.replace(base.silma, endpoint=tts.url),
        database_url=f"sqlite+aiosqlite:///{data}/bridge.db",
        default_user_token=OPERATOR_TOKEN,
        **{k: v for k, v in settings.items() if k in known})
    try:
        async with open_services(the) as services:
            runner = web.AppRunner(create_app(services), access_log=None, shutdown_timeout=2.0)
            await runner.setup()
            await web.SockSite(runner, sock).start()
            try:
                yield url, runner
            finally:
                await runner.cleanup()
    finally:
        await tts.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def status(http: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> int:
    async with http.request(method, url, timeout=TIMEOUT, **kw) as r:
        await r.read()
        return r.status


async def ws_status(http: aiohttp.ClientSession, url: str) -> str:
    try:
        ws = await http.ws_connect(url.replace("http", "ws", 1), timeout=aiohttp.ClientWSTimeout(
            ws_receive=5))
    except aiohttp.WSServerHandshakeError as exc:
        return f"HTTP {exc.status}"
    await ws.close()
    return "accepted (101)"


async def ring(http: aiohttp.ClientSession, base: str, sid: str, path: str = "",
               parameters: dict[str, str] | None = None) -> tuple[TwilioCallEmulator, str]:
    stream_url, params = await fetch_twiml(http, f"{base}/twilio/voice{path}",
                                           {"CallSid": sid}, None)
    call = TwilioCallEmulator(http, stream_url, call_sid=sid,
                              parameters=params if parameters is None else parameters)
    await call.connect(greetings=1)
    async with asyncio.timeout(20):
        await call.wait_for_marks(1)
    return call, stream_url


async def calls_probes(http: aiohttp.ClientSession, base: str, runner: web.AppRunner
                       ) -> list[Probe]:
    store = runner.app[CONTEXT].services.store
    alice, _ = await store.create_user("Alice")
    bob, bob_token = await store.create_user("Bob")
    await store.update_silma(bob.id, api_endpoint="http://127.0.0.1:9")  # Bob's: a dead port
    rows = []
    call, stream_url = await ring(http, base, "CAalice", f"/{alice.id}")
    say = f"{base}/calls/CAalice/say"
    rows.append(Probe("1", "POST /calls/{id}/say with no credential",
                      f"HTTP {await status(http, 'POST', say, json={'text': 'hi'})}"))
    async with http.get(f"{base}/calls", headers=bearer(bob_token), timeout=TIMEOUT) as r:
        body = await r.json() if r.status == 200 else {}
    visible = sum(c["call_id"] == "CAalice" for c in body.get("live", []) + body.get("recent", []))
    rows.append(Probe("2", "another tenant lists calls: sees Alice's", "yes" if visible else "no"))
    rows.append(Probe("2", "another tenant reads the call's trace (text, DTMF)",
                      f"HTTP {await status(http, 'GET', f'{base}/calls/CAalice/trace', headers=bearer(bob_token))}"))  # noqa: E501
    for path in ("/api/pool", "/metrics"):
        rows.append(Probe("2", f"GET {path} with no credential",
                          f"HTTP {await status(http, 'GET', base + path)}"))
    rows.append(Probe("4", "replay the captured stream URL of a live call",
                      await ws_status(http, stream_url)))
    rows.append(Probe("1", "POST /calls/{id}/hangup as a cross-site text/plain form",
                      f"HTTP {await status(http, 'POST', f'{base}/calls/CAalice/hangup', data='{}', headers={'Content-Type': 'text/plain'})}"))  # noqa: E501
    await call.stop()

    # 3: a stream on the default user's path naming Bob in its parameters.
    spoof, _ = await ring(http, base, "CAspoof", "", {"userid": bob.id})
    heard = spoof.report().bytes_received
    await spoof.stop()
    rows.append(Probe("3", "stream on the default path with customParameters.userid=<Bob>: "
                      "served by", "the path's user (default)" if heard else
                      "Bob's target (his endpoint, his key and voice)"))
    return rows


async def stream_probes(http: aiohttp.ClientSession, base: str) -> list[Probe]:
    return [Probe("4", f"open {path} with no webhook answer", await ws_status(http, base + path))
            for path in ("/plivo/stream", "/twilio/stream", "/twilio/stream/default")]


async def flood_probes(http: aiohttp.ClientSession, base: str) -> list[Probe]:
    rows = []
    call, _ = await ring(http, base, "CAflood")
    dtmf = ('{{"event":"dtmf","streamSid":"{}","sequenceNumber":"9","dtmf":'
            '{{"track":"inbound_track","digit":"{}"}}}}')
    for _ in range(100):
        await call.send_raw(dtmf.format(call.stream_sid, "9" * 1_000_000))
    # Twilio sends numbers as strings; one of 5,000 digits once escaped the parser (int()).
    media = ('{{"event":"media","streamSid":"{}","sequenceNumber":"1","media":{{"track":'
             '"inbound","chunk":"1","timestamp":"{}","payload":"/w=="}}}}')
    with structlog.testing.capture_logs() as logs:
        await call.send_raw(media.format(call.stream_sid, "9" * 5000))
        for _ in range(30):
            await call.send_dtmf("2")
        async with asyncio.timeout(30):  # the bridge has read all the above by the next mark
            await call.wait_for_marks(2)
    escaped = sum(e.get("event") == "stream_message_handler_failed" for e in logs)
    await call.stop()
    trace = await _ended_trace(http, base, "CAflood")
    rows.append(Probe("5", "100 DTMF messages of 1 MB digits: trace kept after the call",
                      f"{len(json.dumps(trace)) / 2**20:.2f} MiB"))
    rows.append(Probe("5", "a 5,000-digit media timestamp: exception escaping the parser",
                      "yes (traceback, not counted)" if escaped else "no"))
    rows.append(Probe("5", "30 key presses: replies queued",
                      str(len(trace["utterance_traces"]) - 1)))
    long_id = "CA" + "f" * (512 * 1024)  # fits one 1 MiB message with the rest of start
    stream_url, params = await fetch_twiml(http, f"{base}/twilio/voice", {"CallSid": "CAid"},
                                           None)
    odd = TwilioCallEmulator(http, stream_url, call_sid=long_id, parameters=params)
    await odd.connect(greetings=1)
    waits = [asyncio.ensure_future(odd.wait_closed()), asyncio.ensure_future(
        odd.wait_first_media())]
    # The bridge greets an accepted call; it closes a stream with no valid start in 10 s.
    await asyncio.wait(waits, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    for wait in waits:
        wait.cancel()
    accepted = odd.report().bytes_received > 0
    await odd.abort()
    rows.append(Probe("5", "a call id of 512 KiB", "accepted" if accepted else "refused"))
    return rows


async def _ended_trace(http: aiohttp.ClientSession, base: str, call_id: str) -> dict[str, Any]:
    for _ in range(100):
        async with http.get(f"{base}/calls/{call_id}/trace", headers=bearer(OPERATOR_TOKEN),
                            timeout=TIMEOUT) as r:
            trace: dict[str, Any] = await r.json()
        if trace.get("live") is False:
            return trace
        await asyncio.sleep(0.1)  # a probe of someone else's server: it has no ended event
    raise TimeoutError(f"{call_id} did not end")


async def login_probe(http: aiohttp.ClientSession, base: str) -> Probe:
    for _ in range(10):
        await status(http, "GET", f"{base}/calls",
                     headers={**bearer("wrong"), "X-Forwarded-For": "203.0.113.66"})
    code = await status(http, "GET", f"{base}/calls", headers={
        **bearer(OPERATOR_TOKEN), "X-Forwarded-For": "198.51.100.7"})
    return Probe("8", "behind the proxy, 10 bad tokens from one client; then another "
                 "client's good token", f"HTTP {code}")


def file_probes(data: str) -> list[Probe]:
    mode = stat.S_IMODE(os.stat(f"{data}/bridge.db").st_mode)
    rows = [Probe("9", "database file mode", oct(mode))]
    try:
        from bridge.silma.local_server import child_environment
    except ImportError:
        rows.append(Probe("9", "BRIDGE_* secrets the local TTS child inherits", "all"))
    else:
        env = {"BRIDGE_SECRET_KEY": "s", "BRIDGE_SILMA_API_KEY": "k",
               "BRIDGE_TWILIO_AUTH_TOKEN": "t", "BRIDGE_TTS_SERVER_PORT": "1"}
        leaked = sorted(set(child_environment(env)) - {"BRIDGE_TTS_SERVER_PORT"})
        rows.append(Probe("9", "BRIDGE_* secrets the local TTS child inherits",
                          ", ".join(leaked) or "none"))
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    rows: list[Probe] = []
    with tempfile.TemporaryDirectory() as data:
        async with servers(data, allow_unsigned_webhooks=True,
                           trusted_proxies="127.0.0.1") as (base, runner), \
                aiohttp.ClientSession() as http:
            print("probing calls and streams ...", file=sys.stderr, flush=True)
            rows += await calls_probes(http, base, runner)
            rows += await stream_probes(http, base)
            print("probing floods ...", file=sys.stderr, flush=True)
            rows += await flood_probes(http, base)
            rows.append(await login_probe(http, base))
        rows += file_probes(data)
    width = max(len(r.probe) for r in rows)
    for row in rows:
        print(f"{row.finding:>2}  {row.probe:<{width}}  {row.figure}")
    if args.json:
        args.json.write_text(json.dumps([dataclasses.asdict(r) for r in rows], indent=2))


if __name__ == "__main__":
    asyncio.run(main())
