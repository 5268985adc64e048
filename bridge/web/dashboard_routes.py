"""The calls dashboard: a page that lists live and recent calls from GET /calls (JSON) and draws a
call's latency waterfall from GET /calls/{id}/trace. Both JSON routes live in calls_routes; this
module serves the page, and the site's root, which leads to it."""

from __future__ import annotations

from aiohttp import web

from bridge.web import templating
from bridge.web.access import current_user
from bridge.web.auth import CSRF_FIELD, csrf_token

CALLS_PAGE = "/calls"


async def home(request: web.Request) -> web.StreamResponse:
    """GET / (declared for PAGE: a visitor not logged in is sent to the login page first, and
    comes back here after it): the calls dashboard, where a signed-in user starts."""
    raise web.HTTPFound(CALLS_PAGE)


async def calls_page(request: web.Request) -> web.Response:
    """Served from GET /calls (declared for a logged-in user) to browsers."""
    user = current_user(request)
    # Vary: the same URL answers JSON to API clients, so caches must key on Accept.
    return templating.render("calls.html", headers={"Vary": "Accept"}, user=user.display_name,
                             csrf_field=CSRF_FIELD, csrf=csrf_token(request))
