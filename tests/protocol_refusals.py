"""`assert_refused`: a provider parser refuses a message the way the session counts it."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bridge.errors import ProtocolError


def assert_refused(parse: Callable[[str | bytes], object], raw: str | bytes,
                   message: str) -> ProtocolError:
    """`parse(raw)` raises a ProtocolError (the session's counted malformed-message path) that
    says `message` and echoes nothing hostile into the logs."""
    with pytest.raises(ProtocolError) as info:
        parse(raw)
    text = str(info.value)
    assert message in text
    assert "\x1b" not in text and len(text) < 300
    return info.value
