"""Each user's compiled pronunciation lexicon (lexicon.py), for the calls they own.

The list is read from the store when a call starts, as the TTS target is, so a change (from
the settings page, another bridge of the fleet, or plain SQL) applies to the next call. It is
compiled only when it differs from the one this user's last call compiled: one small read per
call, one compile per settings change. Each user's lexicon is their own list, never another's
nor the default user's.
"""

from __future__ import annotations

import collections

from bridge.call.lexicon import Lexicon, compiled
from bridge.store import Store

# Users whose compiled lexicon is kept; past this the least recently used is compiled again
# at its next call (a few KB each).
MAX_CACHED = 4096


class Lexicons:
    def __init__(self, store: Store, max_cached: int = MAX_CACHED) -> None:
        self._store = store
        self._max_cached = max_cached
        self._cache: collections.OrderedDict[str, Lexicon] = collections.OrderedDict()
        self.compiles = 0  # for tests and curiosity: how often a list was compiled

    async def for_user(self, user_id: str) -> Lexicon:
        entries = tuple(await self._store.pronunciation(user_id))
        cached = self._cache.get(user_id)
        if cached is not None and cached.entries == entries:
            self._cache.move_to_end(user_id)
            return cached
        lexicon = compiled(entries)
        self.compiles += bool(entries)
        self._cache[user_id] = lexicon
        self._cache.move_to_end(user_id)
        while len(self._cache) > self._max_cached:
            self._cache.popitem(last=False)
        return lexicon
