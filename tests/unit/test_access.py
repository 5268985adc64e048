"""Every route declares who may call it, and README's route table says the same."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from bridge.errors import ConfigError
from bridge.settings import load_settings
from bridge.tracing.logs import escape_control_characters
from bridge.web.access import Principal, add, check_declared, declared
from bridge.web.app import create_app
from tests.servers import bridge_services

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


@contextlib.asynccontextmanager
async def bridge_app() -> AsyncIterator[web.Application]:
    """The bridge's app on real services, with a TTS endpoint nobody listens on and no warm
    connections: declaring routes needs no speech."""
    base = load_settings(env={})
    settings = base.replace(silma=dataclasses.replace(base.silma, endpoint="http://127.0.0.1:9"),
                            pool=dataclasses.replace(base.pool, warm=0))
    async with bridge_services(settings) as services:
        yield create_app(services)


async def _ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def test_an_undeclared_route_stops_the_start() -> None:
    app = web.Application()
    add(app, "GET", "/declared", _ok, Principal.PUBLIC)
    app.router.add_get("/forgotten", _ok)
    with pytest.raises(ConfigError, match="GET /forgotten"):
        check_declared(app)


async def test_the_bridge_declares_every_route_and_readme_lists_each_with_its_principal(
) -> None:
    async with bridge_app() as app:
        rows = declared(app)
    routes = {(method, path) for method, path, _ in rows}
    assert ("POST", "/calls/{call_id}/say") in routes
    surface = README.split("### HTTP surface of the bridge", 1)[1].split("\n## ", 1)[0]
    rows = [(m, p, w) for m, p, w in rows if m != "HEAD" and p != "/static"]
    for method, path, who in rows:
        lines = [line for line in surface.splitlines() if f"`{method} {path}`" in line]
        assert lines and all(f"| {who.name} |" in line for line in lines), (method, path, who)


async def test_ops_routes_need_an_operator() -> None:
    async with bridge_app() as app:
        by_path = {path: who for _, path, who in declared(app)}
    for path in ("/metrics", "/api/pool", "/api/health", "/api/pool/health-check"):
        assert by_path[path] is Principal.OPERATOR
    assert by_path["/health"] is Principal.PUBLIC


def test_control_characters_from_callers_are_escaped_in_log_lines() -> None:
    event = escape_control_characters(None, "info", {
        "call_id": "CA\x1b[2J\x1b[31mfake", "n": 3, "text": "tab\tstays"})
    assert event == {"call_id": "CA\\x1b[2J\\x1b[31mfake", "n": 3, "text": "tab\tstays"}
