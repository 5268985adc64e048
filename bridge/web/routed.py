"""The control API across a fleet: a request for a call another bridge holds is answered by
that bridge (forwarded with the caller's own credential, fleet/forward.py), the calls list is
the whole fleet's, and ended calls' traces come from the fleet's store when this bridge did not
hold them. The tenant rule is the local one (`visible`), applied here before anything is
forwarded and again by the owner: a call the viewer may not see stays unknown. Without a fleet
(no BRIDGE_REDIS_URL) every function answers as a fleet of one."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from bridge.call.registry import visible
from bridge.fleet.core import Forward, Instance, route
from bridge.fleet.forward import FORWARD_TIMEOUT_S, FORWARDED_BY, forward, was_forwarded
from bridge.web.access import current_user
from bridge.web.context import context

log = structlog.get_logger("bridge.fleet")
MAX_LISTED = 1000  # live calls taken from one other bridge's list


async def elsewhere(request: web.Request, call_id: str) -> web.Response | None:
    """The answer of the bridge holding `call_id` when that is another live bridge; None:
    answer here (the call is this bridge's, unknown, invisible to the viewer, or its bridge
    is gone)."""
    ctx = context(request)
    fleet = ctx.services.fleet
    if fleet is None or was_forwarded(request):
        return None
    owner = await fleet.owner_of(call_id)
    if owner is None or owner.instance == fleet.me.id:
        return None
    decision = route(owner, await fleet.instance(owner.instance), me=fleet.me.id,
                     may_see=visible(current_user(request), owner.owner),
                     forwarded=was_forwarded(request))
    if isinstance(decision, Forward):
        return await forward(ctx.http, request, decision.url, fleet.me.id)
    return None


async def ended_trace(request: web.Request, call_id: str) -> dict[str, Any] | None:
    """An ended call's trace as the fleet filed it, when the viewer may see it."""
    fleet = context(request).services.fleet
    if fleet is None:
        return None
    found = await fleet.ended_trace(call_id)
    return found if found is not None and visible(current_user(request), found["owner"]) \
        else None


async def fleet_calls(request: web.Request, live: list[dict[str, Any]],
                      recent: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """This bridge's lists, joined by every other bridge's live calls and the fleet's ended
    ones (each other bridge answers with its own live calls, as this viewer)."""
    ctx = context(request)
    fleet = ctx.services.fleet
    if fleet is None or was_forwarded(request):
        return {"live": live, "recent": recent}
    others = [i for i in await fleet.instances() if i.id != fleet.me.id]
    answers = await asyncio.gather(*(_live_on(ctx.http, request, i, fleet.me.id)
                                     for i in others))
    viewer = current_user(request)
    shared = [t for t in await fleet.recent(50) if visible(viewer, t["owner"])]
    return {"live": live + [call for found in answers for call in found],
            "recent": _newest_first(recent, shared)[:50]}


async def _live_on(http: aiohttp.ClientSession, request: web.Request, other: Instance,
                   me: str) -> list[dict[str, Any]]:
    headers = {name: request.headers[name] for name in ("Authorization", "Cookie")
               if name in request.headers}
    headers.update({FORWARDED_BY: me, "Accept": "application/json"})
    try:
        async with http.get(other.url.rstrip("/") + "/calls", headers=headers,
                            timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S),
                            allow_redirects=False) as answer:
            body = await answer.json() if answer.status == 200 else {}
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
        log.warning("fleet_list_failed", instance=other.id, error=str(exc)[:200])
        return []
    calls = body.get("live") if isinstance(body, dict) else None
    if not isinstance(calls, list):
        return []
    return [{**call, "bridge": other.id} for call in calls[:MAX_LISTED]
            if isinstance(call, dict)]


def _newest_first(*lists: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for trace in (t for found in lists for t in found):
        seen.setdefault(str(trace.get("call_id")), trace)
    return sorted(seen.values(), key=lambda t: -float(t.get("started_at") or 0))
