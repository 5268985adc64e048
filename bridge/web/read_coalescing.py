"""Fewer, fuller reads of the carriers' media sockets: the shared sweep behind SO_RCVLOWAT.

A media socket whose peer streams (a message every 20 ms) raises its receive low-water mark so
the kernel wakes its reader once `messages` messages wait (bridge/web/media_socket.py). The mark
has no timeout: a peer that stops with a small message unread (a `stop` it then waits on) would
never be read. So one timer for all such sockets looks every SWEEP_S at whether each was read
since the last look, and lowers the mark of those that were not: whatever waits is read within
two sweeps, and a socket whose stream resumes raises its mark again at its next media message.
One timer and one flag test per socket per sweep, instead of a timer per socket.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

SWEEP_S = 0.1


class Coalesced(Protocol):
    def read_since_sweep(self) -> bool:
        """Whether the socket read anything since the last call (and forget it)."""

    def lower_water(self) -> None:
        """Wake the reader for any byte again (re-armed for the next media message)."""


class ReadCoalescing:
    """`messages`: how many messages a read should take (1: the mark is never raised)."""

    def __init__(self, messages: int, sweep_s: float = SWEEP_S) -> None:
        if not 1 <= messages <= 4:
            raise ValueError("messages per read must be between 1 and 4")
        self.messages = messages
        self._sweep_s = sweep_s
        self._watched: set[Coalesced] = set()
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, sock: Coalesced) -> None:
        """`sock` raised its mark: sweep it until it lowers it."""
        self._watched.add(sock)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._sweep_s, self._sweep)

    def forget(self, sock: Coalesced) -> None:
        self._watched.discard(sock)

    @property
    def watched(self) -> int:
        return len(self._watched)

    def _sweep(self) -> None:
        idle = [sock for sock in self._watched if not sock.read_since_sweep()]
        for sock in idle:
            self._watched.discard(sock)
            sock.lower_water()
        self._timer = (asyncio.get_running_loop().call_later(self._sweep_s, self._sweep)
                       if self._watched else None)
