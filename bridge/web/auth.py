"""Who is asking: users log in with their access token.

- JSON API: `Authorization: Bearer <token>` on every request, or the page's session cookie.
- Pages: a session cookie, stateless and signed: `<user id>.<expiry>.<HMAC-SHA256>`, 12 h. The
  HMAC key is derived from BRIDGE_SECRET_KEY; when that is empty a random key is drawn per
  process, so every session ends when the bridge restarts (and replicas do not share sessions).
  Being stateless, a session cannot be revoked before it expires: logging out clears the cookie.
- CSRF: a state-changing request (POST/PUT/DELETE) that relies on the cookie must carry the
  session's CSRF token (an HMAC of the cookie) in the X-CSRF-Token header or a `csrf_token` form
  field; the cookie is SameSite=Strict as well. Bearer requests need none: browsers never add
  that header on their own.
- Failed token checks are counted per client address and refused for a while past a limit. The
  address is the socket's peer, or, when that peer is a trusted proxy (BRIDGE_TRUSTED_PROXIES),
  the client it names in X-Forwarded-For: behind a proxy, one client's bad tokens must not lock
  every user out. Tokens are never logged.

Interface: `page_user`, `api_user`, `csrf_token`, `wants_html` (used by bridge/web/access.py, which
decides per route who may call it); `add_routes` for /login, /logout.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import hmac
import json
import secrets
import time
from urllib.parse import quote, urlsplit

import structlog
from aiohttp import web

from bridge.settings import Settings
from bridge.store import User
from bridge.web.context import CONTEXT, context
from bridge.web.forwarded import Network, client_address
from bridge.web.templating import render

COOKIE = "bridge_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SESSION_TTL_S = 12 * 3600
FAILED_LOGIN_LIMIT = 10
FAILED_LOGIN_WINDOW_S = 300.0
MAX_TRACKED_CLIENTS = 10_000
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DEFAULT_NEXT = "/settings"

log = structlog.get_logger("bridge.web.auth")


class SessionSigner:
    """Issues and checks session cookie values and their CSRF tokens."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    @classmethod
    def for_settings(cls, settings: Settings) -> SessionSigner:
        if not settings.secret_key:
            return cls(secrets.token_bytes(32))
        # A key of its own, so session MACs never use the Fernet key that encrypts secrets.
        return cls(hmac.digest(settings.secret_key.encode(), b"bridge session key v1", "sha256"))

    def _mac(self, purpose: bytes, message: str) -> str:
        digest = hmac.digest(self._key, purpose + b"\0" + message.encode(), "sha256")
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def issue(self, user_id: str, now: float) -> str:
        payload = f"{user_id}.{int(now + SESSION_TTL_S)}"
        return f"{payload}.{self._mac(b'session', payload)}"

    def verify(self, value: str, now: float) -> str | None:
        """The user id of a genuine, unexpired session value; else None."""
        payload, _, mac = value.rpartition(".")
        user_id, _, expiry = payload.partition(".")
        if not hmac.compare_digest(mac.encode(), self._mac(b"session", payload).encode()):
            return None
        if not expiry.isdigit() or int(expiry) <= now:
            return None
        return user_id

    def csrf(self, session_value: str) -> str:
        return self._mac(b"csrf", session_value)


class FailureWindow:
    """Failed attempts per client in a sliding window: past `limit`, the client waits."""

    def __init__(self, limit: int = FAILED_LOGIN_LIMIT, window_s: float = FAILED_LOGIN_WINDOW_S,
                 max_clients: int = MAX_TRACKED_CLIENTS) -> None:
        self._limit = limit
        self._window_s = window_s
        self._max_clients = max_clients
        self._failures: dict[str, collections.deque[float]] = {}

    def retry_after(self, client: str, now: float) -> float:
        """Seconds until `client` may try again; 0 when it may now."""
        failures = self._failures.get(client)
        if failures is None:
            return 0.0
        while failures and failures[0] <= now - self._window_s:
            failures.popleft()
        if not failures:
            del self._failures[client]
            return 0.0
        return failures[0] + self._window_s - now if len(failures) >= self._limit else 0.0

    def record(self, client: str, now: float) -> None:
        if client not in self._failures and len(self._failures) >= self._max_clients:
            del self._failures[next(iter(self._failures))]  # bound memory: forget the oldest
        self._failures.setdefault(client, collections.deque(maxlen=self._limit)).append(now)


@dataclasses.dataclass
class Auth:
    signer: SessionSigner
    failures: FailureWindow
    secure_cookie: bool
    public_origin: str
    trusted_proxies: tuple[Network, ...] = ()


AUTH = web.AppKey("bridge_auth", Auth)


def _auth(request: web.Request) -> Auth:
    return request.app[AUTH]


def _client(request: web.Request) -> str:
    return client_address(request.remote, request.headers.getall("X-Forwarded-For", []),
                          _auth(request).trusted_proxies)


def json_error(cls: type[web.HTTPError], message: str,
               headers: dict[str, str] | None = None) -> web.HTTPError:
    """An HTTP error whose body is {"error": message}, for the JSON API."""
    return cls(text=json.dumps({"error": message}), content_type="application/json",
               headers=headers)


async def _session_user(request: web.Request) -> User | None:
    value = request.cookies.get(COOKIE)
    if not value:
        return None
    user_id = _auth(request).signer.verify(value, time.time())
    return None if user_id is None else await context(request).services.store.get_user(user_id)


def csrf_token(request: web.Request) -> str:
    """The CSRF token of the request's session, for a page's forms. Call after page_user."""
    value = request.cookies.get(COOKIE)
    if not value:
        raise web.HTTPFound(_login_url(request))
    return _auth(request).signer.csrf(value)


async def _csrf_ok(request: web.Request) -> bool:
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.content_type == "application/x-www-form-urlencoded":
        field = (await request.post()).get(CSRF_FIELD)  # post() caches: handlers can read it again
        sent = field if isinstance(field, str) else None
    value = request.cookies.get(COOKIE, "")
    return bool(sent) and hmac.compare_digest(
        str(sent).encode(), _auth(request).signer.csrf(value).encode())


def _login_url(request: web.Request) -> str:
    return "/login?next=" + quote(request.path_qs, safe="/")


async def page_user(request: web.Request) -> User:
    """The logged-in user of a page request; redirects to /login when there is none, and refuses
    (403) a state-changing request without the session's CSRF token."""
    user = await _session_user(request)
    if user is None:
        raise web.HTTPFound(_login_url(request))
    if request.method not in SAFE_METHODS and not await _csrf_ok(request):
        raise web.HTTPForbidden(text="missing or invalid CSRF token; reload the page")
    return user


async def api_user(request: web.Request) -> User:
    """The user of a JSON API request (bearer token, else session cookie + CSRF for changes);
    401/403/429 with a JSON error otherwise."""
    header = request.headers.get("Authorization")
    if header is None:
        user = await _session_user(request)
        if user is None:
            raise json_error(web.HTTPUnauthorized, "log in or send Authorization: Bearer <token>",
                             {"WWW-Authenticate": 'Bearer realm="bridge"'})
        if request.method not in SAFE_METHODS and not await _csrf_ok(request):
            raise json_error(web.HTTPForbidden, "missing or invalid X-CSRF-Token header")
        return user
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise json_error(web.HTTPUnauthorized, "expected Authorization: Bearer <token>",
                         {"WWW-Authenticate": 'Bearer realm="bridge"'})
    user = await _check_token(request, token.strip(), via="bearer")
    if user is None:
        raise json_error(web.HTTPUnauthorized, "invalid access token",
                         {"WWW-Authenticate": 'Bearer realm="bridge", error="invalid_token"'})
    return user


async def _check_token(request: web.Request, token: str, *, via: str) -> User | None:
    """The token's user; counts a failure against the client, refuses (429) one past the limit."""
    auth, client, now = _auth(request), _client(request), time.time()
    wait = auth.failures.retry_after(client, now)
    if wait > 0:
        raise json_error(web.HTTPTooManyRequests, "too many failed logins; try again later",
                         {"Retry-After": str(int(wait) + 1)})
    user = await context(request).services.store.user_for_token(token)
    if user is None:
        auth.failures.record(client, now)
        log.warning("login_failed", client=client, via=via)
    return user


def _safe_next(target: str) -> str:
    """Only a path on this site: never another origin (an open redirect)."""
    parts = urlsplit(target)
    if (not target.startswith("/") or target.startswith("//") or "\\" in target
            or parts.scheme or parts.netloc):
        return DEFAULT_NEXT
    return target


def _same_origin(request: web.Request) -> bool:
    """A browser's cross-site form post carries a foreign Origin: refuse it (login CSRF)."""
    origin = request.headers.get("Origin")
    return origin is None or origin in (f"{request.scheme}://{request.host}",
                                        _auth(request).public_origin)


def _login_page(next_path: str, error: str = "", *, status: int = 200,
                headers: dict[str, str] | None = None) -> web.Response:
    return render("login.html", status=status, headers=headers, next=next_path, error=error)


async def login_form(request: web.Request) -> web.Response:
    return _login_page(_safe_next(request.query.get("next", DEFAULT_NEXT)))


async def login(request: web.Request) -> web.Response:
    if not _same_origin(request):
        raise web.HTTPForbidden(text="cross-site login refused")
    form = await request.post()
    next_path = _safe_next(str(form.get("next", DEFAULT_NEXT)))
    try:
        user = await _check_token(request, str(form.get("token", "")).strip(), via="form")
    except web.HTTPTooManyRequests as refused:
        return _login_page(next_path, "Too many failed attempts. Try again in a few minutes.",
                           status=429, headers={"Retry-After": refused.headers["Retry-After"]})
    if user is None:
        return _login_page(next_path, "That access token is not valid.", status=401)
    auth = _auth(request)
    response = web.HTTPSeeOther(next_path)
    response.set_cookie(COOKIE, auth.signer.issue(user.id, time.time()), max_age=SESSION_TTL_S,
                        path="/", httponly=True, samesite="Strict", secure=auth.secure_cookie)
    log.info("login", user_id=user.id, client=_client(request))
    raise response


async def logout(request: web.Request) -> web.Response:
    """Declared for a logged-in user: the session's CSRF token is checked before this runs, so
    no other site can log a user out."""
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE, path="/", secure=_auth(request).secure_cookie,
                        httponly=True, samesite="Strict")
    raise response


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


def install(app: web.Application, trusted_proxies: tuple[Network, ...]) -> None:
    settings = app[CONTEXT].settings
    public = urlsplit(settings.public_url)
    app[AUTH] = Auth(signer=SessionSigner.for_settings(settings), failures=FailureWindow(),
                     secure_cookie=public.scheme == "https",
                     public_origin=f"{public.scheme}://{public.netloc}",
                     trusted_proxies=trusted_proxies)
