"""The client-gone middleware: a body cut short is a 400 logged as the client's doing, and
every other failure passes through untouched."""

from __future__ import annotations

import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from bridge.web.disconnects import client_gone


async def cut_short(_: web.Request) -> web.StreamResponse:
    raise ConnectionResetError("Connection lost")


async def broken(_: web.Request) -> web.StreamResponse:
    raise RuntimeError("a bug")


async def fine(_: web.Request) -> web.StreamResponse:
    return web.Response(text="ok")


async def test_a_body_cut_short_is_answered_400_and_logged_as_gone() -> None:
    request = make_mocked_request("POST", "/calls/CA1/say")
    with structlog.testing.capture_logs() as logs, pytest.raises(web.HTTPBadRequest):
        await client_gone(request, cut_short)
    assert logs == [{"event": "client_gone", "method": "POST", "path": "/calls/CA1/say",
                     "log_level": "info"}]


async def test_other_failures_and_answers_pass_through() -> None:
    request = make_mocked_request("GET", "/api/pool")
    with pytest.raises(RuntimeError, match="a bug"):
        await client_gone(request, broken)
    response = await client_gone(request, fine)
    assert isinstance(response, web.Response) and response.text == "ok"
