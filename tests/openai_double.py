"""A double of an OpenAI-compatible chat-completions API (a paid API) on 127.0.0.1, streaming
the documented format (cited in bridge/agent/openai_chat.py): `POST {base}/chat/completions`
with `"stream": true` answers `text/event-stream`, one `data: {chat.completion.chunk}` line per
chunk and a blank line after each, a first chunk with the role alone, content deltas one word
each, tool-call deltas (id, type and name first, the arguments split over later chunks), a
chunk with the finish reason, a usage chunk with no choices (as vLLM sends), `data: [DONE]`.
A ": keep-alive" comment line opens every stream, as some proxies send.

It records every request (body and Authorization header), and answers each from `script`, one
`Reply` a request, then `Reply("OK.")`: a reply streamed in full, or paused after some words
until `resume` is set (so a test can see the first clause spoken before the reply ends), an
HTTP error status, a first token that never comes (`stall`), or a chunk that is not JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiohttp import web

from tests.servers import serving_app


@dataclasses.dataclass
class Reply:
    text: str = ""
    tool_calls: list[tuple[str, dict[str, Any]]] = dataclasses.field(default_factory=list)
    status: int = 200  # not 200: that error, as a JSON body, instead of a stream
    pause_after_words: int | None = None  # then wait for the double's `resume`
    stall: bool = False  # headers and the role chunk, then nothing until `resume`
    malformed: bool = False  # a chunk that is not JSON after the role chunk


@dataclasses.dataclass
class ChatDouble:
    script: list[Reply] = dataclasses.field(default_factory=list)
    requests: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    authorizations: list[str | None] = dataclasses.field(default_factory=list)
    paused: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    resume: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    # Set when a reply could not be written to its end (the client had gone).
    aborted: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    url: str = ""

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        self.authorizations.append(request.headers.get("Authorization"))
        reply = self.script.pop(0) if self.script else Reply("OK.")
        if reply.status != 200:
            return web.json_response({"error": {"message": "double", "type": "server_error"}},
                                     status=reply.status)
        assert body.get("stream") is True, "the double only streams"
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            await self._stream(response, body, reply)
        except ConnectionError:  # aiohttp's "cannot write to closing transport"
            self.aborted.set()
        return response

    async def _stream(self, response: web.StreamResponse, body: dict[str, Any],
                      reply: Reply) -> None:
        async def send(delta: dict[str, Any] | None = None, finish: str | None = None,
                       **extra: Any) -> None:
            chunk: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion.chunk",
                                     "created": 1, "model": body.get("model", "")}
            chunk["choices"] = ([] if delta is None
                                else [{"index": 0, "delta": delta, "finish_reason": finish}])
            chunk.update(extra)
            await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")

        await response.write(b": keep-alive\n\n")
        await send({"role": "assistant", "content": ""})
        if reply.stall:  # a server that never answers (until the test ends)
            await self.resume.wait()
            return
        if reply.malformed:
            await response.write(b"data: {\"choices\": [\n\n")
            return
        for n, word in enumerate(re.findall(r"\S+\s*", reply.text), 1):
            await send({"content": word})
            if n == reply.pause_after_words:
                self.paused.set()
                await self.resume.wait()
        for index, (name, arguments) in enumerate(reply.tool_calls):
            await send({"tool_calls": [{"index": index, "id": f"call_{index}abc",
                                        "type": "function",
                                        "function": {"name": name, "arguments": ""}}]})
            text = orjson.dumps(arguments).decode()
            third = max(1, len(text) // 3)
            for start in range(0, len(text), third):  # split inside keys and values
                await send({"tool_calls": [{"index": index, "function": {
                    "arguments": text[start:start + third]}}]})
        await send({}, finish="tool_calls" if reply.tool_calls else "stop")
        await send(None, usage={"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2})
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()


@contextlib.asynccontextmanager
async def serving_chat(double: ChatDouble) -> AsyncIterator[ChatDouble]:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", double.completions)
    async with serving_app(app) as base:
        double.url = f"{base}/v1"
        try:
            yield double
        finally:
            double.resume.set()  # a reply still paused ends with the test
