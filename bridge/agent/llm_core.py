"""The LLM agent's decisions, pure (no I/O, no clock): the conversation it keeps, how a token
stream becomes speakable clauses, what enters the history when the caller interrupts, and the
tools the model is offered and how its tool-call fragments are put together.

The shell (`llm.py`) streams a completion, pushes each clause this module hands it into the
call's speech stream, and carries out the tool calls; everything it decides is decided here.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from typing import Any

import orjson

# History bounds: a long call must neither grow memory nor the provider's bill per turn.
MAX_HISTORY_MESSAGES = 40
MAX_HISTORY_CHARS = 24_000
MAX_MESSAGE_CHARS = 4_000  # one user or assistant message (a transcript, a reply)

# A clause longer than this is cut at its last word boundary: a reply without punctuation
# (some models, some languages) must still start speaking before the model has finished.
MAX_CLAUSE_CHARS = 160

MAX_TOOL_CALLS = 4  # per completion; fragments for a further index are refused
MAX_TOOL_ARGUMENT_CHARS = 2_000
MAX_DTMF_DIGITS = 32
MAX_GOODBYE_CHARS = 500
# A caller's turn may lead to a few completions (a tool call, then what the model says after
# its result); bounded so a model calling tools in a loop cannot hold the call.
MAX_COMPLETIONS_PER_TURN = 3

# Punctuation that ends a clause once white space follows it (a "." followed by a digit is a
# decimal point, "3.5"; one at the end of the text so far may be either, so it waits).
# Latin and Arabic sentence and clause marks: . ! ? … , ; : and ؟ ، ؛ (Arabic question mark,
# comma, semicolon), with closing quotes and brackets kept on the clause they close.
_CLOSERS = "\"'\u201d\u2019)\\]"  # closing quotes (straight and curly) and brackets
_CLAUSE_END = re.compile(f"[.!?…,;:؟،؛][{_CLOSERS}]*\\s+")
# Words whose "." does not end a clause: "e.g. this", "Dr. Smith". Compared lower-case,
# without their final ".". A single letter is an initial ("J. Smith").
_ABBREVIATIONS = frozenset({
    "e.g", "i.e", "etc", "vs", "mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "no", "approx",
})
_WORD_BEFORE_DOT = re.compile(f"(\\S+)\\.[{_CLOSERS}]*\\s+$")


class ClauseSplitter:
    """Cuts a token stream into clauses as soon as each is complete. Lossless: the clauses
    joined are exactly the text pushed (white space after a clause stays on it, so the
    speaker's own segmenter sees the sentence end at once)."""

    def __init__(self, max_chars: int = MAX_CLAUSE_CHARS) -> None:
        self._buffer = ""
        self._max_chars = max_chars

    def push(self, text: str) -> list[str]:
        self._buffer += text
        clauses: list[str] = []
        while (cut := self._next_cut()) is not None:
            clauses.append(self._buffer[:cut])
            self._buffer = self._buffer[cut:]
        return clauses

    def flush(self) -> list[str]:
        """The stream is over: what is left is the last clause."""
        rest, self._buffer = self._buffer, ""
        return [rest] if rest.strip() else []

    def _next_cut(self) -> int | None:
        for match in _CLAUSE_END.finditer(self._buffer):
            if match.end() > self._max_chars:
                break
            if not _is_abbreviation(self._buffer[: match.end()]):
                return match.end()
        if len(self._buffer) <= self._max_chars:
            return None
        # Too long without a clause end: cut after the last white space that fits, keeping
        # that space on the clause; a single word longer than the limit is cut inside it.
        head = self._buffer[: self._max_chars]
        space = max(head.rfind(" "), head.rfind("\n"), head.rfind("\t"))
        return space + 1 if space > 0 else self._max_chars


def _is_abbreviation(clause: str) -> bool:
    word = _WORD_BEFORE_DOT.search(clause)
    if word is None:  # the clause ends with another mark than "."
        return False
    token = word.group(1).lower().lstrip("\"'\u201c\u2018([")  # opening quotes and brackets
    return (len(token) == 1 and token.isalpha()) or token in _ABBREVIATIONS


# -- the conversation --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as the model wrote it


@dataclasses.dataclass(slots=True)
class Message:
    role: str  # "user", "assistant" or "tool"
    content: str | None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""
    # For an assistant message: the text sent to the caller's speech, until an interruption
    # replaces the content with what was heard; None once fixed (or never spoken).
    spoken: str | None = None

    def chars(self) -> int:
        return len(self.content or "") + sum(len(c.arguments) + len(c.name)
                                             for c in self.tool_calls)

    def wire(self) -> dict[str, Any]:
        """The message as the chat-completions API takes it."""
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [
                {"id": c.id, "type": "function",
                 "function": {"name": c.name, "arguments": c.arguments}}
                for c in self.tool_calls]
        if self.role == "tool":
            out["tool_call_id"] = self.tool_call_id
        return out


class Conversation:
    """The system prompt and the turns since (the greeting first, when one was said), bounded:
    the oldest messages leave first, and a tool call leaves with its result."""

    def __init__(self, system_prompt: str, *, max_messages: int = MAX_HISTORY_MESSAGES,
                 max_chars: int = MAX_HISTORY_CHARS) -> None:
        self._system = system_prompt[:MAX_HISTORY_CHARS]
        self._max_messages = max_messages
        self._max_chars = max_chars
        self._messages: list[Message] = []

    @property
    def history(self) -> tuple[Message, ...]:
        return tuple(self._messages)

    def add_user(self, text: str) -> None:
        self._add(Message("user", text[:MAX_MESSAGE_CHARS]))

    def add_assistant(self, spoken: str, tool_calls: Iterable[ToolCall] = ()) -> None:
        """What the agent said in a turn (the text sent to speech) and the tools it called.
        Nothing said and no tool called: nothing to remember."""
        calls = tuple(tool_calls)
        text = spoken.strip()[:MAX_MESSAGE_CHARS]
        if not text and not calls:
            return
        self._add(Message("assistant", text or None, calls, spoken=spoken if text else None))

    def add_tool_result(self, call_id: str, result: str) -> None:
        self._add(Message("tool", result[:MAX_MESSAGE_CHARS], tool_call_id=call_id))

    def heard(self, utterance_text: str, heard_text: str) -> bool:
        """The caller interrupted the utterance whose text (so far) was `utterance_text`: the
        latest assistant message spoken as that utterance keeps only `heard_text`, because
        the model must not believe the caller heard the rest. False when none matches (the
        utterance was not the model's, e.g. a fallback, or already left the history)."""
        if not utterance_text.strip():
            return False
        for index in range(len(self._messages) - 1, -1, -1):
            message = self._messages[index]
            if message.spoken is not None and message.spoken.startswith(utterance_text):
                heard = heard_text.strip()[:MAX_MESSAGE_CHARS]
                message.spoken = None
                if heard or message.tool_calls:
                    message.content = heard or None
                else:  # heard nothing: as if it had not been said
                    del self._messages[index]
                return True
        return False

    def messages(self) -> list[dict[str, Any]]:
        """The request's messages: the system prompt, then the kept history."""
        system = [{"role": "system", "content": self._system}] if self._system else []
        return system + [m.wire() for m in self._messages]

    def _add(self, message: Message) -> None:
        self._messages.append(message)
        total = sum(m.chars() for m in self._messages)
        while self._messages and (len(self._messages) > self._max_messages
                                  or total > self._max_chars):
            total -= self._messages.pop(0).chars()
        # Never begin with a tool result, nor with the tool calls it answers: providers refuse
        # a result without its call, and a call without its result.
        while self._messages and (self._messages[0].role == "tool"
                                  or self._messages[0].tool_calls):
            self._messages.pop(0)


# -- one completion's text ---------------------------------------------------------------------

class AssistantTurn:
    """One completion as it streams: the clauses to speak, what was spoken, the tool calls.

    "Spoken" means handed to the call's speech: a completion cancelled mid-way (the caller
    took the turn) records only that, never the tokens that had not become a clause yet."""

    def __init__(self) -> None:
        self._splitter = ClauseSplitter()
        self._tools = ToolCallAssembler()
        self.spoken = ""

    def content(self, text: str) -> list[str]:
        """Tokens of the reply: the clauses now complete, to be spoken."""
        return self._spoken(self._splitter.push(text))

    def tool_deltas(self, fragments: list[dict[str, Any]]) -> None:
        self._tools.add(fragments)

    def finish(self) -> list[str]:
        """The reply is complete: the last clause."""
        return self._spoken(self._splitter.flush())

    def tool_calls(self) -> list[ToolCall]:
        return self._tools.calls()

    def _spoken(self, clauses: list[str]) -> list[str]:
        room = MAX_MESSAGE_CHARS - len(self.spoken)
        kept: list[str] = []
        for clause in clauses:  # past the bound the reply is not spoken (nor remembered)
            if len(clause) > room:
                break
            kept.append(clause)
            room -= len(clause)
        self.spoken += "".join(kept)
        return kept


class ToolCallError(ValueError):
    """Tool-call fragments that cannot be assembled (a bad index, too many, too long)."""


@dataclasses.dataclass(slots=True)
class _Partial:
    id: str = ""
    name: str = ""
    arguments: str = ""


class ToolCallAssembler:
    """Tool calls arrive in fragments: the first for an index carries its id and name, the
    following ones pieces of its JSON arguments. Fragments are joined per index."""

    def __init__(self) -> None:
        self._calls: dict[int, _Partial] = {}

    def add(self, fragments: list[dict[str, Any]]) -> None:
        for fragment in fragments:
            index = fragment.get("index", 0)
            if not isinstance(index, int) or isinstance(index, bool) or index < 0:
                raise ToolCallError(f"tool call index {index!r}")
            if index not in self._calls and len(self._calls) >= MAX_TOOL_CALLS:
                raise ToolCallError(f"more than {MAX_TOOL_CALLS} tool calls")
            call = self._calls.setdefault(index, _Partial())
            if isinstance(ident := fragment.get("id"), str):
                call.id = ident[:128] if not call.id else call.id
            function = fragment.get("function")
            if isinstance(function, dict):
                # Names come whole from most providers but some stream them too: joined.
                call.name += _text(function.get("name"))
                call.arguments += _text(function.get("arguments"))
            if len(call.name) > 64 or len(call.arguments) > MAX_TOOL_ARGUMENT_CHARS:
                raise ToolCallError("tool call too long")

    def calls(self) -> list[ToolCall]:
        """The complete calls in index order; a call with no id gets one (some servers omit
        it) so its result can refer to it."""
        return [ToolCall(c.id or f"call_{index}", c.name, c.arguments or "{}")
                for index, c in sorted(self._calls.items()) if c.name]


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


# -- the tools -----------------------------------------------------------------------------------

_DTMF = re.compile(rf"[0-9*#]{{1,{MAX_DTMF_DIGITS}}}")

TOOLS: list[dict[str, Any]] = [
    {"type": "function", "function": {
        "name": "end_call",
        "description": "End the phone call, optionally after saying a short goodbye.",
        "parameters": {
            "type": "object",
            "properties": {"goodbye": {"type": "string", "maxLength": MAX_GOODBYE_CHARS,
                                       "description": "What to say before hanging up."}},
            "additionalProperties": False,
        },
    }},
    {"type": "function", "function": {
        "name": "send_dtmf",
        "description": "Press telephone keys on the call (for example to answer a phone menu).",
        "parameters": {
            "type": "object",
            "properties": {"digits": {"type": "string", "pattern": _DTMF.pattern,
                                      "description": "The keys to press: 0-9, * and #."}},
            "required": ["digits"],
            "additionalProperties": False,
        },
    }},
]


@dataclasses.dataclass(frozen=True, slots=True)
class EndCall:
    goodbye: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class SendDtmf:
    digits: str


@dataclasses.dataclass(frozen=True, slots=True)
class BadToolCall:
    """A call the agent cannot carry out; `reason` goes back to the model as the result."""

    reason: str


ToolAction = EndCall | SendDtmf | BadToolCall


def tool_action(call: ToolCall) -> ToolAction:
    """What a tool call asks for, checked against its schema (models do not always keep to it)."""
    try:
        args = orjson.loads(call.arguments or "{}")
    except orjson.JSONDecodeError:
        return BadToolCall("arguments are not JSON")
    if not isinstance(args, dict):
        return BadToolCall("arguments are not a JSON object")
    if call.name == "end_call":
        goodbye = args.get("goodbye")
        if goodbye is not None and not isinstance(goodbye, str):
            return BadToolCall("goodbye must be a string")
        goodbye = (goodbye or "").strip()[:MAX_GOODBYE_CHARS]
        return EndCall(goodbye or None)
    if call.name == "send_dtmf":
        digits = args.get("digits")
        if not isinstance(digits, str) or not _DTMF.fullmatch(digits):
            return BadToolCall(f"digits must be 1 to {MAX_DTMF_DIGITS} of 0-9, * and #")
        return SendDtmf(digits)
    return BadToolCall(f"no tool named {call.name[:64]!r}")
