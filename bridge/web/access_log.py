"""The bridge's HTTP access log, written through structlog like every other line it logs.

aiohttp's own access logger writes Apache-style text through the stdlib, which would put plain
lines among JSON ones under BRIDGE_LOG_FORMAT=json and break a log shipper's parsing.
"""

from __future__ import annotations

import structlog
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

_log = structlog.get_logger("bridge.access")


class StructlogAccessLogger(AbstractAccessLogger):
    """One `http_request` event per request (the `access_log_class` of the bridge's runner).

    The path is logged without its query string: a query may carry a credential."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        _log.info("http_request", method=request.method, path=request.path,
                  status=response.status, bytes=response.body_length,
                  ms=round(time * 1000, 1), remote=request.remote)
