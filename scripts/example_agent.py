#!/usr/bin/env python3
"""A small remote agent for the bridge (README, "Remote agents").

    python scripts/example_agent.py --port 8765
    BRIDGE_AGENT_KIND=remote BRIDGE_AGENT_REMOTE_URL=ws://127.0.0.1:8765/agent make run

It greets the caller in streamed pieces, answers key presses, tells the caller how long they
spoke, and hangs up on 9.
"""

from __future__ import annotations

import argparse
import json

from aiohttp import WSMsgType, web


async def agent(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for msg in ws:
        if msg.type != WSMsgType.TEXT:
            continue  # binary messages are caller audio, which this agent does not ask for
        event = json.loads(msg.data)
        kind = event["type"]
        if kind == "call_started":
            for piece in ("Hello, this is a remote agent. ", "Press a key, ", "or say something."):
                await ws.send_json({"type": "say", "text": piece, "partial": True})
            await ws.send_json({"type": "say", "text": "", "partial": False})
        elif kind == "dtmf" and event["digit"] == "9":
            await ws.send_json({"type": "hangup", "goodbye": "Goodbye from the remote agent."})
        elif kind == "dtmf":
            await ws.send_json({"type": "say", "text": f"You pressed {event['digit']}."})
        elif kind == "speech_ended":
            await ws.send_json(
                {"type": "say", "text": f"You spoke for {event['duration_s']:.1f} seconds."}
            )
        elif kind == "interrupted":
            print(f"caller interrupted after hearing: {event['heard_text']!r}")
    return ws


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_get("/agent", agent)
    web.run_app(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
