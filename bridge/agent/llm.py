"""The LLM agent: the caller's final transcripts go to an OpenAI-compatible chat model, whose
streamed reply is spoken clause by clause as it arrives (BRIDGE_AGENT_KIND=llm).

Per call: the greeting (if set) is said and remembered as the agent's first turn. Each final
transcript is a user turn and starts a completion in a supervised task (the call's agent loop
must go on reading events while the model streams); a new user turn cancels the completion
still running, keeping in the history only what had been handed to speech. An interruption
replaces the interrupted turn with what the caller heard. The model may call `end_call` (the
goodbye is said, heard, then the call ends) and `send_dtmf` (keys pressed in-band, the result
given back so the model can go on). A provider that fails, or sends no first token in time,
gets the configured fallback said once for that turn, logged with its reason and counted in
`fallbacks`. Decisions are in `llm_core.py`; the HTTP client is `openai_chat.py`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib

import aiohttp
import structlog

from bridge.agent.base import (
    AgentEvent,
    CallControl,
    CallEnded,
    CallStarted,
    Interrupted,
    SpeechStream,
    Transcript,
)
from bridge.agent.llm_core import (
    MAX_COMPLETIONS_PER_TURN,
    TOOLS,
    AssistantTurn,
    BadToolCall,
    Conversation,
    EndCall,
    SendDtmf,
    ToolCall,
    ToolCallError,
    tool_action,
)
from bridge.agent.openai_chat import MALFORMED, ChatClient, LlmError
from bridge.errors import BridgeError
from bridge.settings import AgentSettings
from bridge.supervisor import Supervisor

log = structlog.get_logger("bridge.agent")


class LlmAgent:
    def __init__(self, http: aiohttp.ClientSession, settings: AgentSettings) -> None:
        self._settings = settings
        self._client = ChatClient(
            http, base_url=settings.llm_base_url, model=settings.llm_model,
            api_key=settings.llm_api_key, temperature=settings.llm_temperature,
            max_tokens=settings.llm_max_tokens,
            first_token_timeout_s=settings.llm_first_token_timeout_s,
            request_timeout_s=settings.llm_request_timeout_s)
        self._conversation = Conversation(settings.llm_system_prompt)
        self._tasks = Supervisor(self._task_failed)
        self._reply: asyncio.Task[None] | None = None
        self._turn: AssistantTurn | None = None  # the completion streaming now
        self._ending = False  # end_call was carried out: no new turns
        self._call_id = ""
        self.fallbacks: collections.Counter[str] = collections.Counter()  # by reason

    @property
    def conversation(self) -> Conversation:
        return self._conversation

    async def handle(self, call: CallControl, event: AgentEvent) -> None:
        if isinstance(event, CallStarted):
            self._call_id = event.call_id
            if self._settings.greeting:
                call.say(self._settings.greeting)
                self._conversation.add_assistant(self._settings.greeting)
        elif isinstance(event, Transcript):
            text = event.text.strip()
            if event.final and text and not self._ending:
                await self._cancel_reply()
                self._conversation.add_user(text)
                self._reply = self._tasks.spawn("llm-reply", self._reply_to(call))
        elif isinstance(event, Interrupted):
            turn = self._turn
            if turn is not None and event.text.strip() and turn.spoken.startswith(event.text):
                # The reply streaming now was cut: the rest of it will not be heard.
                await self._cancel_reply()
            self._conversation.heard(event.text, event.heard_text)
        elif isinstance(event, CallEnded):
            await self._cancel_reply()

    def caller_audio(self, mulaw: bytes) -> None:
        return None  # the agent hears the caller through transcripts

    async def close(self) -> None:
        await self._tasks.aclose()

    async def _cancel_reply(self) -> None:
        reply, self._reply = self._reply, None
        if reply is not None and not reply.done():
            reply.cancel()
            # asyncio.wait, not await: the reply's CancelledError is not this task's.
            await asyncio.wait([reply])

    async def _reply_to(self, call: CallControl) -> None:
        """One user turn: completions until the model has nothing more to do."""
        for _ in range(MAX_COMPLETIONS_PER_TURN):
            try:
                spoke, calls = await self._complete(call)
            except LlmError as exc:
                self._fall_back(call, exc.reason, exc.detail)
                return
            except ToolCallError as exc:
                self._fall_back(call, MALFORMED, str(exc))
                return
            except BridgeError as exc:  # the call refused the speech (its queue is full)
                log.warning("llm_say_refused", call_id=self._call_id, error=str(exc))
                return
            if not calls or not await self._run_tools(call, calls, spoke=spoke):
                return
        log.warning("llm_turn_cut", call_id=self._call_id,
                    reason=f"more than {MAX_COMPLETIONS_PER_TURN} completions in one turn")

    async def _complete(self, call: CallControl) -> tuple[bool, list[ToolCall]]:
        """Stream one completion into speech; whether it said anything, and its tool calls.
        What was spoken enters the history however it ends (cancelled, failed or complete)."""
        turn = self._turn = AssistantTurn()
        stream: SpeechStream | None = None
        calls: list[ToolCall] = []
        loop = asyncio.get_running_loop()
        started = loop.time()
        first_token_s: float | None = None
        finish: str | None = None
        try:
            # aclosing: a reply abandoned mid-stream (a bad tool call) closes its request now,
            # not when the generator is collected.
            deltas = self._client.stream(self._conversation.messages(), TOOLS)
            async with contextlib.aclosing(deltas):
                async for delta in deltas:
                    if first_token_s is None and (delta.content or delta.tool_calls):
                        first_token_s = loop.time() - started
                    stream = _speak(call, stream, turn.content(delta.content))
                    turn.tool_deltas(delta.tool_calls)
                    finish = delta.finish_reason or finish
            stream = _speak(call, stream, turn.finish())
            calls = turn.tool_calls()
        finally:
            self._turn = None
            if stream is not None:
                stream.end()  # an utterance left open would hold the call's speaker
            self._conversation.add_assistant(turn.spoken, calls)
        log.info("llm_completion", call_id=self._call_id, first_token_s=_round(first_token_s),
                 total_s=_round(loop.time() - started), spoken_chars=len(turn.spoken),
                 tools=[c.name for c in calls], finish_reason=finish)
        return bool(turn.spoken.strip()), calls

    async def _run_tools(self, call: CallControl, calls: list[ToolCall], *,
                         spoke: bool) -> bool:
        """Carry out the model's tool calls, their results into the history; True when the
        model should be asked to go on."""
        for tool in calls:
            action = tool_action(tool)
            if isinstance(action, EndCall):
                self._ending = True
                self._conversation.add_tool_result(tool.id, "ok: the call is ending")
                log.info("llm_end_call", call_id=self._call_id, goodbye=action.goodbye is not None)
                # A goodbye is always said when one is configured: a hang-up without one would
                # cut what the model said just before, still playing.
                await call.hangup(action.goodbye or self._settings.goodbye or None)
                return False
            if isinstance(action, SendDtmf):
                try:
                    call.send_dtmf(action.digits)
                    result = f"ok: pressed {action.digits}"
                except (BridgeError, ValueError) as exc:  # refused by the call's bounds
                    result = f"error: not sent ({exc})"
            else:
                assert isinstance(action, BadToolCall)
                result = f"error: {action.reason}"
            log.info("llm_tool", call_id=self._call_id, tool=tool.name[:64], result=result,
                     spoke=spoke)
            self._conversation.add_tool_result(tool.id, result)
        return True

    def _fall_back(self, call: CallControl, reason: str, detail: str) -> None:
        """Said once per user turn: the turn ends here."""
        self.fallbacks[reason] += 1
        log.warning("llm_fallback", call_id=self._call_id, reason=reason, detail=detail)
        if self._settings.fallback:
            try:
                call.say(self._settings.fallback)
            except BridgeError as exc:
                log.warning("llm_say_refused", call_id=self._call_id, error=str(exc))

    def _task_failed(self, name: str, exc: BaseException) -> None:
        log.warning("llm_agent_task_failed", call_id=self._call_id, task=name,
                    error=f"{type(exc).__name__}: {exc}", exc_info=exc)


def _speak(call: CallControl, stream: SpeechStream | None,
           clauses: list[str]) -> SpeechStream | None:
    """Push clauses into the turn's utterance, opened at its first clause (a reply that is
    only a tool call says nothing)."""
    for clause in clauses:
        if stream is None:
            stream = call.say_stream()
        stream.push(clause)
    return stream


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)
