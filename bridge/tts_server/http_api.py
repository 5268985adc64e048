"""HTTP fallback: POST {base}/synthesize (same JSON as the WebSocket) and GET {base}/health."""

from __future__ import annotations

import dataclasses
import math

import orjson
from aiohttp import web

from bridge.silma.protocol import (
    ErrorReply,
    RequestError,
    SynthesizeRequest,
    build_complete,
    build_error,
)
from bridge.tts_server import metrics
from bridge.tts_server.auth import is_authorized
from bridge.tts_server.service import TTSService, error_reply

STATUS = {"bad_request": 400, "unauthorized": 401, "busy": 503, "timeout": 504, "internal": 500}


def retry_after(seconds: float | None) -> dict[str, str]:
    """The Retry-After header of a busy answer. HTTP's is whole seconds (RFC 9110 10.2.3):
    rounded up, at least 1; a JSON body may carry the finer estimate."""
    return {"Retry-After": str(max(1, math.ceil(seconds or 1)))}


def error_response(reply: ErrorReply, status: int | None = None) -> web.Response:
    headers = retry_after(reply.retry_after_s) if reply.code == "busy" else None
    return web.Response(
        body=build_error(reply),
        status=status or STATUS.get(reply.code, 500),
        content_type="application/json",
        headers=headers,
    )


def unauthorized() -> web.Response:
    response = error_response(
        ErrorReply("missing or wrong API key (Authorization: Bearer <key>)", code="unauthorized")
    )
    response.headers["WWW-Authenticate"] = "Bearer"
    return response


class HttpApi:
    def __init__(self, service: TTSService) -> None:
        self._service = service

    async def synthesize(self, request: web.Request) -> web.Response:
        service = self._service
        if not is_authorized(request.headers, service.settings.api_key):
            return unauthorized()
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            limit = service.settings.max_message_bytes
            too_large = f"request body is over the limit of {limit} bytes"
            return error_response(ErrorReply(too_large, code="bad_request"), 413)
        try:
            message = service.parse(raw)
        except RequestError as exc:
            return error_response(error_reply(exc, None))
        if not isinstance(message, SynthesizeRequest):
            only = "POST /synthesize takes only a synthesize request"
            return error_response(ErrorReply(only, code="bad_request"))
        try:
            # HTTP answers in one body: streaming is a WebSocket feature.
            done = await service.synthesize(dataclasses.replace(message, stream=False))
        except Exception as exc:  # request root: every failure becomes an error reply
            return error_response(error_reply(exc, message.id))
        return web.Response(body=build_complete(done), content_type="application/json")

    async def health(self, request: web.Request) -> web.Response:
        service = self._service
        return web.Response(
            body=orjson.dumps(service.health()),
            status=200 if service.ready else 503,
            content_type="application/json",
        )

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=metrics.render(self._service.health),
            content_type="text/plain",
            charset="utf-8",
            headers={"X-Content-Type-Options": "nosniff"},
        )
