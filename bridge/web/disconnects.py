"""A client that goes away in the middle of its request (the body cut short) is the client's
doing, not a server error: logged as such, not as a handler's traceback."""

from __future__ import annotations

import structlog
from aiohttp import web

from bridge.web.access import Handler

log = structlog.get_logger("bridge.web")


@web.middleware
async def client_gone(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ConnectionResetError:
        log.info("client_gone", method=request.method, path=request.path)
        raise web.HTTPBadRequest(text="the connection was lost before the request was read") \
            from None
