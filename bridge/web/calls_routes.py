"""The control API for live calls: list, say, trace, hang up. A browser asking for /calls gets
the dashboard page instead of the list."""

from __future__ import annotations

import json

from aiohttp import web

from bridge.web import dashboard_routes
from bridge.web.auth import api_user
from bridge.web.context import context

MAX_SAY_CHARS = 2000


async def list_calls(request: web.Request) -> web.Response:
    if dashboard_routes.wants_html(request):
        return await dashboard_routes.calls_page(request)
    await api_user(request)
    registry = context(request).registry
    return web.json_response({"live": registry.live_calls(), "recent": registry.recent()[:50]},
                             headers={"Vary": "Accept"})


async def say(request: web.Request) -> web.Response:
    session = context(request).registry.live.get(request.match_info["call_id"])
    if session is None:
        raise web.HTTPNotFound(text="no live call with that id")
    text = (await _json_body(request)).get("text")
    if not isinstance(text, str) or not text.strip():
        raise web.HTTPBadRequest(text="text is missing or empty")
    if len(text) > MAX_SAY_CHARS:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_SAY_CHARS, actual_size=len(text),
                                            text=f"text is over {MAX_SAY_CHARS} characters")
    utt = session.say(text)
    return web.json_response({"call_id": session.call_id, "utterance": utt.index}, status=202)


async def trace(request: web.Request) -> web.Response:
    await api_user(request)
    found = context(request).registry.trace(request.match_info["call_id"])
    if found is None:
        raise web.HTTPNotFound(text="no call with that id")
    return web.json_response(found)


async def hangup(request: web.Request) -> web.Response:
    """End a live call, optionally after a goodbye. Idempotent: an ended call answers 200."""
    registry = context(request).registry
    call_id = request.match_info["call_id"]
    session = registry.live.get(call_id)
    if session is None:
        if registry.trace(call_id) is not None:
            return web.json_response({"call_id": call_id, "status": "ended"})
        raise web.HTTPNotFound(text="no call with that id")
    goodbye = (await _json_body(request)).get("goodbye") if request.can_read_body else None
    if goodbye is not None and not isinstance(goodbye, str):
        raise web.HTTPBadRequest(text="goodbye must be a string")
    await session.hangup(goodbye)
    return web.json_response({"call_id": call_id, "status": "ended"})


async def _json_body(request: web.Request) -> dict[str, object]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise web.HTTPBadRequest(text="body must be a JSON object") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="body must be a JSON object")
    return body


def add_routes(app: web.Application) -> None:
    app.router.add_get("/calls", list_calls)
    app.router.add_post("/calls/{call_id}/say", say)
    app.router.add_get("/calls/{call_id}/trace", trace)
    app.router.add_post("/calls/{call_id}/hangup", hangup)
