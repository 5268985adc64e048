"""The control API for live calls: list, say, trace, hang up. A browser asking for /calls gets
the dashboard page instead of the list. In a fleet (BRIDGE_REDIS_URL), any bridge answers for
every call: one held by another bridge is asked of it (web/routed.py).

Every route is declared for a logged-in user (bridge/web/access.py); which calls that user may
see or control is the registry's rule (`CallRegistry.session_for` / `trace_for`): their own, or
every call for an operator. Another tenant's call answers 404, as if it did not exist.
JSON bodies must say so (Content-Type: application/json): a cross-site form cannot.
"""

from __future__ import annotations

import json

from aiohttp import web

from bridge.call.session import CallBusy
from bridge.web import dashboard_routes, routed
from bridge.web.access import current_user
from bridge.web.auth import json_error, wants_html
from bridge.web.context import context

MAX_SAY_CHARS = 2000
MAX_BODY_BYTES = 16 * 1024  # a say of 2,000 characters of Arabic in JSON fits with room


async def list_calls(request: web.Request) -> web.Response:
    if wants_html(request):
        return await dashboard_routes.calls_page(request)
    registry, viewer = context(request).registry, current_user(request)
    calls = await routed.fleet_calls(request, registry.live_calls(viewer),
                                     registry.recent(viewer)[:50])
    return web.json_response(calls, headers={"Vary": "Accept"})


async def say(request: web.Request) -> web.Response:
    call_id = request.match_info["call_id"]
    session = context(request).registry.session_for(current_user(request), call_id)
    if session is None:
        if (answer := await routed.elsewhere(request, call_id)) is not None:
            return answer
        raise web.HTTPNotFound(text="no live call with that id")
    text = (await _json_body(request)).get("text")
    if not isinstance(text, str) or not text.strip():
        raise web.HTTPBadRequest(text="text is missing or empty")
    if len(text) > MAX_SAY_CHARS:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_SAY_CHARS, actual_size=len(text),
                                            text=f"text is over {MAX_SAY_CHARS} characters")
    try:
        utt = session.say(text)
    except CallBusy as exc:
        raise json_error(web.HTTPTooManyRequests, str(exc), {"Retry-After": "1"}) from None
    return web.json_response({"call_id": session.call_id, "utterance": utt.index}, status=202)


async def trace(request: web.Request) -> web.Response:
    call_id = request.match_info["call_id"]
    found = context(request).registry.trace_for(current_user(request), call_id)
    if found is None:
        if (answer := await routed.elsewhere(request, call_id)) is not None:
            return answer
        found = await routed.ended_trace(request, call_id)
    if found is None:
        raise web.HTTPNotFound(text="no call with that id")
    return web.json_response(found)


async def hangup(request: web.Request) -> web.Response:
    """End a live call, optionally after a goodbye. Idempotent: an ended call answers 200."""
    registry, viewer = context(request).registry, current_user(request)
    call_id = request.match_info["call_id"]
    session = registry.session_for(viewer, call_id)
    if session is None:
        if (answer := await routed.elsewhere(request, call_id)) is not None:
            return answer
        if registry.trace_for(viewer, call_id) is not None or \
                await routed.ended_trace(request, call_id) is not None:
            return web.json_response({"call_id": call_id, "status": "ended"})
        raise web.HTTPNotFound(text="no call with that id")
    goodbye = (await _json_body(request)).get("goodbye") if request.can_read_body else None
    if goodbye is not None and (not isinstance(goodbye, str) or len(goodbye) > MAX_SAY_CHARS):
        raise web.HTTPBadRequest(text=f"goodbye must be a string of at most {MAX_SAY_CHARS} "
                                      "characters")
    await session.hangup(goodbye)
    return web.json_response({"call_id": call_id, "status": "ended"})


async def _json_body(request: web.Request) -> dict[str, object]:
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(text="send the body as application/json")
    # request.read() stops at the app's client_max_size (1 MiB) however the body is framed.
    raw = await request.read()
    if len(raw) > MAX_BODY_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY_BYTES, actual_size=len(raw))
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise web.HTTPBadRequest(text="body must be a JSON object") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="body must be a JSON object")
    return body
