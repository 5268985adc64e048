"""A control request for a call another bridge holds, forwarded to that bridge over HTTP.

Why HTTP and not Redis request/reply: the owner answers the very request (status, body and
errors pass through unchanged), authenticates it itself with the caller's own credential (the
bearer token or session cookie is forwarded), so the auth and tenant rules are exactly those
of a local request and no new trust is added between bridges; a timeout is per request, and
nothing needs reply channels. Redis only says where a call is (jambonz does the same: call to
feature server in Redis, call updates forwarded over HTTP).

A forwarded request carries FORWARDED_BY; the bridge that gets it answers from what it holds
and never forwards again (no loops). Forging the header gains nothing: it only makes a bridge
answer locally.
"""

from __future__ import annotations

import aiohttp
import structlog
from aiohttp import web

log = structlog.get_logger("bridge.fleet")

FORWARDED_BY = "X-Bridge-Forwarded-By"
ROUTED_TO = "X-Bridge-Routed-To"  # on the answer: which bridge it came from
FORWARD_TIMEOUT_S = 5.0
MAX_FORWARD_BODY = 64 * 1024  # control bodies are a say of 2,000 characters at most
# The caller's credential and what the owner's handlers read; nothing else crosses.
_PASSED = ("Authorization", "Cookie", "X-CSRF-Token", "Content-Type", "Accept")


def was_forwarded(request: web.Request) -> bool:
    return FORWARDED_BY in request.headers


async def forward(http: aiohttp.ClientSession, request: web.Request, owner_url: str,
                  me: str) -> web.Response:
    """`request` asked of the bridge at `owner_url`: its answer, or 502 when it cannot say."""
    body = await request.read() if request.can_read_body else b""
    if len(body) > MAX_FORWARD_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_FORWARD_BODY, actual_size=len(body))
    headers = {name: request.headers[name] for name in _PASSED if name in request.headers}
    headers[FORWARDED_BY] = me
    url = owner_url.rstrip("/") + request.rel_url.path_qs
    try:
        async with http.request(request.method, url, data=body or None, headers=headers,
                                timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S),
                                allow_redirects=False) as answer:
            content = await answer.content.read(4 * 1024 * 1024)
            kind = answer.headers.get("Content-Type", "application/octet-stream")
            return web.Response(status=answer.status, body=content,
                                headers={"Content-Type": kind, ROUTED_TO: owner_url})
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        log.warning("fleet_forward_failed", url=owner_url, path=request.rel_url.path,
                    error=f"{type(exc).__name__}: {exc}"[:200])
        raise web.HTTPBadGateway(text="the bridge holding this call did not answer") from None
