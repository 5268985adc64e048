"""The calls dashboard: a page that lists live and recent calls from GET /calls (JSON) and draws a
call's latency waterfall from GET /calls/{id}/trace. Both JSON routes live in calls_routes; this
module serves the page and its static files."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from bridge.web import templating
from bridge.web.auth import CSRF_FIELD, csrf_token, page_user

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_PREFIX = "/static"


def _quality(media_range: str) -> tuple[str, float]:
    kind, *params = (part.strip() for part in media_range.split(";"))
    for param in params:
        name, _, value = param.partition("=")
        if name.strip() == "q":
            try:
                return kind.lower(), float(value)
            except ValueError:
                return kind.lower(), 0.0
    return kind.lower(), 1.0


def wants_html(request: web.Request) -> bool:
    """True when the client names HTML at least as acceptable as JSON (a browser navigating).
    No Accept header, */* (curl) or application/json keep the JSON API."""
    ranges = dict(_quality(r) for r in request.headers.get("Accept", "").split(",") if r.strip())
    html = max(ranges.get("text/html", 0.0), ranges.get("application/xhtml+xml", 0.0))
    json = max(ranges.get("application/json", 0.0), ranges.get("application/*", 0.0))
    return html > 0 and html >= json


async def calls_page(request: web.Request) -> web.Response:
    user = await page_user(request)
    # Vary: the same URL answers JSON to API clients, so caches must key on Accept.
    return templating.render("calls.html", headers={"Vary": "Accept"}, user=user.display_name,
                             csrf_field=CSRF_FIELD, csrf=csrf_token(request))


def add_routes(app: web.Application) -> None:
    """Serve bridge/web/static at /static/ unless another module (the settings UI) already
    does: aiohttp never falls through from one static prefix to a second one."""
    taken = any(isinstance(r, web.StaticResource) and r.canonical == STATIC_PREFIX
                for r in app.router.resources())
    if not taken:
        app.router.add_static(f"{STATIC_PREFIX}/", STATIC_DIR)
