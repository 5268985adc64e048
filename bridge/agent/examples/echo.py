"""scripts/example_agent.py's twin, in the bridge's process (README, "Agents"):

    BRIDGE_AGENT_KIND=python:bridge.agent.examples.echo:create make run

It greets the caller in streamed pieces, answers key presses, says back what the caller said
(with [stt] configured) or else how long they spoke, plays the tones 1 2 3 back on # (as an
agent dialling through another IVR would) and hangs up on 9. Copy it into a package
of your own and point BRIDGE_AGENT_KIND at `python:yourpackage.yourmodule:create`.
"""

from __future__ import annotations

import structlog

from bridge.agent.base import (
    Agent,
    AgentEvent,
    CallControl,
    CallStarted,
    Dtmf,
    Interrupted,
    SpeechEnded,
    Transcript,
)
from bridge.agent.inprocess import AgentContext

log = structlog.get_logger("bridge.agent.echo")


class EchoAgent:
    def __init__(self, transcribing: bool) -> None:
        # With speech to text the caller's words are answered; without, the length of speech.
        self._transcribing = transcribing

    async def handle(self, call: CallControl, event: AgentEvent) -> None:
        if isinstance(event, CallStarted):
            greeting = call.say_stream()
            for piece in ("Hello, this is an agent in the bridge. ", "Press a key, ",
                          "or say something."):
                greeting.push(piece)
            greeting.end()
        elif isinstance(event, Dtmf) and event.digit == "9":
            # Waits until the goodbye is heard: the events after it no longer matter.
            await call.hangup("Goodbye from the echo agent.")
        elif isinstance(event, Dtmf) and event.digit == "#":
            call.send_dtmf("123")
        elif isinstance(event, Dtmf):
            call.say(f"You pressed {event.digit}.")
        elif isinstance(event, Transcript) and event.final:
            call.say(f"You said: {event.text}.")
        elif isinstance(event, SpeechEnded) and not self._transcribing:
            call.say(f"You spoke for {event.duration_s:.1f} seconds.")
        elif isinstance(event, Interrupted):
            log.info("caller_interrupted", utterance=event.utterance,
                     heard_chars=len(event.heard_text))

    def caller_audio(self, mulaw: bytes) -> None:
        return None  # this agent listens through the bridge's events only

    async def close(self) -> None:
        return None


def create(context: AgentContext) -> Agent:
    """The factory: one agent per call."""
    return EchoAgent(transcribing=context.settings.stt.backend != "none")
