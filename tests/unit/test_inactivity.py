"""When a silent media stream's peer counts as gone (bridge/web/inactivity.py)."""

from __future__ import annotations

import pytest

from bridge.web.inactivity import Inactivity


def test_a_peer_that_keeps_sending_is_never_gone() -> None:
    watch = Inactivity(30.0, now=0.0)
    assert watch.interval_s == 7.5
    assert not any(watch.gone(True, 7.5 * k) for k in range(1, 100))


def test_silence_for_the_timeout_is_gone_never_earlier() -> None:
    watch = Inactivity(30.0, now=0.0)
    assert not watch.gone(True, 7.5)  # a read came before this check: heard of at 7.5
    checks = [watch.gone(False, 7.5 * k) for k in range(2, 7)]  # 15, 22.5, 30, 37.5, 45
    assert checks == [False, False, False, True, True]


def test_a_read_after_silence_restarts_the_count() -> None:
    watch = Inactivity(1.0, now=0.0)
    assert not watch.gone(False, 0.75)
    assert not watch.gone(True, 1.0)  # heard of again just before the timeout
    assert not watch.gone(False, 1.75)
    assert watch.gone(False, 2.0)


def test_a_stream_that_never_sends_is_gone_a_timeout_after_it_opened() -> None:
    watch = Inactivity(2.0, now=10.0)
    assert not watch.gone(False, 11.5)
    assert watch.gone(False, 12.0)


def test_the_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Inactivity(0.0, now=0.0)
