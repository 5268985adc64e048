"""The default agent: a greeting from config, then a fixed reply per DTMF digit."""

from __future__ import annotations

from collections.abc import Mapping

from bridge.agent.base import AgentEvent, CallControl, CallStarted, Dtmf


class ScriptedAgent:
    def __init__(self, greeting: str, replies: Mapping[str, str]) -> None:
        self._greeting = greeting
        self._replies = dict(replies)

    async def handle(self, call: CallControl, event: AgentEvent) -> None:
        if isinstance(event, CallStarted) and self._greeting:
            call.say(self._greeting)
        elif isinstance(event, Dtmf) and (reply := self._replies.get(event.digit)):
            call.say(reply)

    def caller_audio(self, mulaw: bytes) -> None:
        return None

    async def close(self) -> None:
        return None
