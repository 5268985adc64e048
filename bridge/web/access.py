"""Who may call each route: declared once per route, enforced by one middleware.

Every route is added with `add(app, method, path, handler, who)`. Before a handler runs, the
middleware checks the route's principal and refuses the request otherwise; a route added any
other way is refused when the app starts (`check_declared`), so no handler can be left open by
forgetting a call.

- PUBLIC: anyone (liveness, login, static files); nothing is checked.
- CARRIER: Twilio or Plivo. Checked by the handler, which needs the body and the user's own
  credentials: webhook signatures; a media stream needs a single-use stream token
  (bridge/web/stream_tokens.py), and the upgrade signature where the carrier signs it.
- USER: any logged-in user: bearer token, or the page session (+ CSRF on changes); a browser
  asking for a page is sent to /login instead.
- PAGE: USER, on a page: anyone not logged in is sent to /login.
- OWNER: as USER, and the path's {user_id} must be the user's own.
- OPERATOR: as USER with the operator role; or any request that arrived on the ops listener
  (BRIDGE_OPS_PORT), which the operator keeps off the public network.

What a user sees inside a route (their own calls only) is the call registry's job: it filters by
owner, so a handler cannot hand out another tenant's call.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from aiohttp.web import AbstractResource, AbstractRoute

from bridge.errors import ConfigError
from bridge.store import User
from bridge.web.auth import api_user, json_error, page_user, wants_html

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Principal(enum.Enum):
    PUBLIC = "anyone"
    CARRIER = "the carrier (signature, stream token)"
    USER = "a logged-in user"
    PAGE = "a logged-in user, on a page"
    OWNER = "the user named in the path"
    OPERATOR = "an operator"


# Route (or static resource) -> who may call it. Filled by add() / add_static().
ACCESS = web.AppKey("bridge_access", dict)
# True on the ops listener's app: its requests count as the operator's.
OPS_LISTENER = web.AppKey("bridge_ops_listener", bool)
_USER = "bridge_user"


def _table(app: web.Application) -> dict[AbstractRoute | AbstractResource, Principal]:
    if ACCESS not in app:
        app[ACCESS] = {}
    return app[ACCESS]


def add(app: web.Application, method: str, path: str, handler: Handler, who: Principal) -> None:
    _table(app)[app.router.add_route(method, path, handler)] = who


def add_static(app: web.Application, prefix: str, directory: Path) -> None:
    _table(app)[app.router.add_static(prefix, directory)] = Principal.PUBLIC


def current_user(request: web.Request) -> User:
    """The user the middleware authenticated for this request (USER, OWNER, OPERATOR routes)."""
    user: User | None = request.get(_USER)
    if user is None:
        raise RuntimeError(f"{request.path} is not declared for a logged-in principal")
    return user


def _principal(app: web.Application, route: AbstractRoute) -> Principal | None:
    """A route's own declaration, or its resource's (a static directory declares them all)."""
    table = _table(app)
    return table.get(route) or (table.get(route.resource) if route.resource else None)


async def _authenticated(request: web.Request, who: Principal) -> User:
    # A browser navigating to a page is sent to the login page; API clients get a JSON 401.
    if request.method == "GET" and (who is Principal.PAGE or wants_html(request)):
        return await page_user(request)
    return await api_user(request)


@web.middleware
async def enforce(request: web.Request, handler: Handler) -> web.StreamResponse:
    who = _principal(request.app, request.match_info.route)
    if who is None:
        if request.match_info.http_exception is not None:  # aiohttp's own 404 / 405
            return await handler(request)
        raise web.HTTPForbidden(text="route without an access declaration")
    if who in (Principal.PUBLIC, Principal.CARRIER):
        return await handler(request)
    if who is Principal.OPERATOR and request.app.get(OPS_LISTENER, False):
        return await handler(request)
    user = await _authenticated(request, who)
    if who is Principal.OWNER and request.match_info.get("user_id") != user.id:
        raise json_error(web.HTTPForbidden, "you can only see and change your own settings")
    if who is Principal.OPERATOR and not user.is_operator:
        raise json_error(web.HTTPForbidden, "this needs an operator's token")
    request[_USER] = user
    return await handler(request)


def check_declared(app: web.Application) -> None:
    """Refuse to start with a route nobody declared a principal for."""
    missing = [f"{route.method} {route.resource.canonical}" for route in app.router.routes()
               if route.resource is not None and _principal(app, route) is None]
    if missing:
        raise ConfigError(f"routes without an access declaration: {', '.join(missing)}")


def declared(app: web.Application) -> list[tuple[str, str, Principal]]:
    """(method, path, principal) of every route: for README's table and its test."""
    return [(route.method, route.resource.canonical, who) for route in app.router.routes()
            if route.resource is not None and (who := _principal(app, route)) is not None]
