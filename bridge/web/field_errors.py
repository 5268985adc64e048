"""Form and JSON API errors that name the field at fault: {"errors": {field: message}}, so a page
can show each message next to its field."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FieldError(ValueError):
    def __init__(self, field: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.field = field
        self.status = status


def errors_response(errors: dict[str, str], status: int = 400, **extra: Any) -> web.Response:
    return web.json_response({"errors": errors, **extra}, status=status)


def field_errors(handler: Handler) -> Handler:
    """Answer a FieldError raised by `handler` as {"errors": {field: message}}."""
    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except FieldError as exc:
            return errors_response({exc.field: str(exc)}, exc.status)
    return wrapped
