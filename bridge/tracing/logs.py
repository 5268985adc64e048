"""structlog set-up: JSON lines in production, readable lines on a terminal."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

# C0 and C1 control characters (ESC starts ANSI sequences) and DEL, except tab.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def _escape(value: str) -> str:
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", value)


def escape_control_characters(_: Any, __: str, event: MutableMapping[str, Any]
                              ) -> MutableMapping[str, Any]:
    """Values can come from callers and carriers (ids, errors, text): on a terminal an ANSI
    escape among them could rewrite what the operator reads. JSON escapes them anyway."""
    for key, value in event.items():
        if isinstance(value, str) and _CONTROL.search(value):
            event[key] = _escape(value)
    return event


def configure_logging(fmt: str = "console", level: str = "info") -> None:
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    logging.basicConfig(format="%(message)s", stream=sys.stderr,
                        level=getattr(logging, level.upper(), logging.INFO))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            escape_control_characters,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            getattr(logging, level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
