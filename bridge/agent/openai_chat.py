"""A streaming client for OpenAI-compatible chat completions (OpenAI, Groq, vLLM, Ollama).

`POST {base_url}/chat/completions` with `"stream": true` answers data-only server-sent events:
one `data: {json}` line per `chat.completion.chunk`, the stream terminated by `data: [DONE]`
(OpenAI's API reference for the `stream` parameter, e.g. as mirrored at
https://pub.dev/documentation/openai/1.0.0/openai.api/CreateCompletionRequest/stream.html).
A chunk's `choices[0]` holds `delta` and `finish_reason` (stop, length, tool_calls,
content_filter); `delta.content` is the next text, `delta.tool_calls` a list of fragments each
with an `index`, its `id`, `type` and `function.name` on the first, pieces of
`function.arguments` after (the ChatCompletionChunk.Choice schema, e.g.
https://developer.broadcom.com/xapis/vmware-private-ai-service-api/latest/data-structures/StreamChatCompletionsChoice/).
`choices` may be empty or null in a final usage chunk (vLLM); such chunks carry no text.
Ollama's endpoint (http://localhost:11434/v1) needs no key, so Authorization is sent only
when one is set (https://huggingface.co/spaces/oldg9516X/ollama/blob/main/docs/openai.md).
SSE comment lines (": keep-alive", sent by some proxies) and other fields are skipped.

Everything the server sends is bounded (a line, the whole reply) and the request has two
deadlines: the first token (content or a tool call) within `first_token_timeout_s` of the
request, the whole reply within `request_timeout_s`. Every failure is one `LlmError` whose
`reason` is a fixed label; the key is in no message and no log.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncGenerator
from typing import Any

import aiohttp
import orjson

from bridge.errors import BridgeError

MAX_LINE_BYTES = 64 * 1024
MAX_REPLY_BYTES = 4 * 1024 * 1024

# Fixed labels of LlmError.reason (for logs and counters).
STATUS = "status"  # the server answered an HTTP error
TIMEOUT = "timeout"  # no first token, or no complete reply, in time
CONNECTION = "connection"  # could not connect, or the connection broke mid-reply
MALFORMED = "malformed"  # a reply that breaks the format or its bounds
PROVIDER_ERROR = "provider_error"  # the stream carried an error object


class LlmError(BridgeError):
    """The completion failed; `reason` is one of the labels above, `detail` for people."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclasses.dataclass(frozen=True, slots=True)
class Delta:
    """One chunk's news: text, tool-call fragments (raw, assembled by the caller), and the
    finish reason on the chunk that has one."""

    content: str = ""
    tool_calls: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    finish_reason: str | None = None


class _Done:
    """The `data: [DONE]` line."""


DONE = _Done()


class ChatClient:
    def __init__(self, http: aiohttp.ClientSession, *, base_url: str, model: str,
                 api_key: str, temperature: float, max_tokens: int,
                 first_token_timeout_s: float, request_timeout_s: float) -> None:
        self._http = http
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._model = model
        self._headers = {"Accept": "text/event-stream"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._temperature = temperature
        self._max_tokens = max_tokens
        self._first_token_timeout_s = first_token_timeout_s
        self._request_timeout_s = request_timeout_s

    def __repr__(self) -> str:  # never the headers: they hold the key
        return f"ChatClient(url={self._url!r}, model={self._model!r})"

    async def stream(self, messages: list[dict[str, Any]],
                     tools: list[dict[str, Any]]) -> AsyncGenerator[Delta, None]:
        """The completion's deltas as they arrive (only those with text, tool calls or a
        finish reason). Leaving the loop early closes the request."""
        body: dict[str, Any] = {"model": self._model, "messages": messages, "stream": True,
                                "temperature": self._temperature,
                                "max_tokens": self._max_tokens}
        if tools:
            body["tools"] = tools
        loop = asyncio.get_running_loop()
        started = loop.time()
        end = started + self._request_timeout_s
        first = min(started + self._first_token_timeout_s, end)
        try:
            async with asyncio.timeout_at(first):
                response = await self._http.post(
                    self._url, data=orjson.dumps(body),
                    headers={**self._headers, "Content-Type": "application/json"},
                    allow_redirects=False,  # a redirect could point anywhere
                    timeout=aiohttp.ClientTimeout(total=self._request_timeout_s))
        except TimeoutError as exc:
            raise LlmError(TIMEOUT, f"no answer within {self._first_token_timeout_s:g} s") \
                from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise LlmError(CONNECTION, type(exc).__name__) from exc
        complete = False
        try:
            if response.status != 200:
                raise LlmError(STATUS, f"HTTP {response.status}")
            lines = _Lines()
            token_seen = finished = False
            while not complete:
                deadline = end if token_seen else first
                try:
                    async with asyncio.timeout_at(deadline):
                        data = await response.content.readany()
                except TimeoutError as exc:
                    limit = self._request_timeout_s if token_seen \
                        else self._first_token_timeout_s
                    what = "the whole reply" if token_seen else "a first token"
                    raise LlmError(TIMEOUT, f"{what} not within {limit:g} s") from exc
                except (aiohttp.ClientError, OSError) as exc:
                    raise LlmError(CONNECTION, type(exc).__name__) from exc
                if not data:
                    if not finished:
                        raise LlmError(MALFORMED, "the reply ended before [DONE]")
                    complete = True
                    break
                for line in lines.feed(data):
                    event = parse_line(line)
                    if event is DONE:
                        complete = True
                        break
                    if isinstance(event, Delta):
                        token_seen = token_seen or bool(event.content or event.tool_calls)
                        finished = finished or event.finish_reason is not None
                        yield event
        finally:
            # A reply read to its end leaves the connection for the next turn (a new TLS
            # handshake costs round trips); one abandoned mid-stream must be closed.
            if complete:
                response.release()
            else:
                response.close()


class _Lines:
    """Bytes in, complete lines out, each line and the whole reply bounded."""

    def __init__(self) -> None:
        self._partial = b""
        self._total = 0

    def feed(self, data: bytes) -> list[bytes]:
        self._total += len(data)
        if self._total > MAX_REPLY_BYTES:
            raise LlmError(MALFORMED, f"reply over {MAX_REPLY_BYTES} bytes")
        *lines, self._partial = (self._partial + data).split(b"\n")
        if len(self._partial) > MAX_LINE_BYTES or any(len(x) > MAX_LINE_BYTES for x in lines):
            raise LlmError(MALFORMED, f"a line over {MAX_LINE_BYTES} bytes")
        return lines


def parse_line(line: bytes) -> Delta | _Done | None:
    """One SSE line: a Delta, DONE, or None for what carries nothing (blank lines, comments,
    other fields, chunks without a choice or with nothing new in it)."""
    line = line.rstrip(b"\r")
    if not line.startswith(b"data:"):
        return None  # blank (event separator), ": comment", "event:", "id:", "retry:"
    payload = line[5:].removeprefix(b" ")
    if payload.strip() == b"[DONE]":
        return DONE
    try:
        chunk = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise LlmError(MALFORMED, "a chunk is not JSON") from exc
    if not isinstance(chunk, dict):
        raise LlmError(MALFORMED, "a chunk is not a JSON object")
    if (error := chunk.get("error")) is not None:
        code = (error.get("code") or error.get("type")) if isinstance(error, dict) else None
        raise LlmError(PROVIDER_ERROR, str(code or "error")[:64])
    choices = chunk.get("choices")
    if not choices:
        return None
    if not isinstance(choices, list) or not isinstance(choices[0], dict):
        raise LlmError(MALFORMED, "choices is not a list of objects")
    choice = choices[0]
    delta = choice.get("delta") or {}
    finish = choice.get("finish_reason")
    if not isinstance(delta, dict) or not (finish is None or isinstance(finish, str)):
        raise LlmError(MALFORMED, "a choice's delta or finish_reason has the wrong type")
    content = delta.get("content") or ""
    tool_calls = delta.get("tool_calls") or []
    if not isinstance(content, str) or not isinstance(tool_calls, list) \
            or not all(isinstance(t, dict) for t in tool_calls):
        raise LlmError(MALFORMED, "a delta's content or tool_calls has the wrong type")
    if not content and not tool_calls and finish is None:
        return None  # e.g. the first chunk: the role alone
    return Delta(content, tool_calls, finish[:32] if finish else None)
