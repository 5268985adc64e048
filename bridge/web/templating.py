"""Server-rendered pages: `string.Template` files from templates/, every value HTML-escaped
unless it is `Markup`, which only code that escaped its parts itself may build."""

from __future__ import annotations

import functools
import html
import string
from pathlib import Path

from aiohttp import web

TEMPLATES = Path(__file__).resolve().parent / "templates"

# Scripts and styles come only from the bridge itself: an injected tag could not run. Previews
# play from blob: URLs; nothing may frame the pages (clickjacking).
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "media-src 'self' blob: data:; connect-src 'self'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class Markup(str):
    """HTML that is already safe: built from escaped parts."""


def escape(value: object) -> str:
    return value if isinstance(value, Markup) else html.escape(str(value), quote=True)


@functools.cache
def _template(name: str) -> string.Template:
    return string.Template((TEMPLATES / name).read_text(encoding="utf-8"))


def render(name: str, *, status: int = 200, headers: dict[str, str] | None = None,
           **values: object) -> web.Response:
    """The page `name` with `values` substituted; a missing value raises KeyError."""
    body = _template(name).substitute({key: escape(value) for key, value in values.items()})
    return web.Response(text=body, status=status, content_type="text/html",
                        headers={**PAGE_HEADERS, **(headers or {})})
