"""Agents in the bridge's own process: `BRIDGE_AGENT_KIND=python:package.module:factory`.

The module is imported once per process, when the bridge starts, and the factory is checked
then (the module imports, it has that name, the name is a function of one argument), so a typo
stops the start with a ConfigError saying which part is wrong instead of failing every call.
For each call the bridge calls `factory(context)` with an `AgentContext` and talks to the agent
it returns through the interface of bridge/agent/base.py (README, "Agents"):

    events in:     await agent.handle(call, event)  (call_started … transcript … call_ended),
                   agent.caller_audio(mulaw)        (every 20 ms frame; must not block)
    controls out:  call.say(text), call.say_stream() → push(text)… end(), call.clear(),
                   await call.hangup(goodbye), call.send_dtmf(digits)
    at the end:    await agent.close()

`handle` is given one event at a time, in order: an await in it holds the next events back, so
long work belongs in a task of the agent's own (closed in `close`). An exception in `handle` is
logged and the call goes on; a factory that raises, or returns something that is no agent,
costs only that call: the caller hears the configured fallback and the call ends.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Callable

import aiohttp
import structlog

from bridge.agent.base import Agent, AgentEvent, CallControl, CallStarted
from bridge.errors import ConfigError
from bridge.settings import PYTHON_AGENT, Settings

log = structlog.get_logger("bridge.agent")
AGENT_METHODS = ("handle", "caller_audio", "close")


@dataclasses.dataclass(frozen=True)
class AgentContext:
    """What a factory gets for each call: enough to configure an agent, nothing of the call
    itself (the agent learns that from `call_started` and acts through its CallControl)."""

    settings: Settings  # the bridge's settings; the agent's own at settings.agent
    http: aiohttp.ClientSession  # the bridge's shared HTTP session, for the agent's requests


AgentFactory = Callable[[AgentContext], Agent]


def load_factory(kind: str) -> AgentFactory:
    """The factory `kind` ("python:package.module:factory") names, imported and checked."""
    match = PYTHON_AGENT.fullmatch(kind)
    if match is None:
        raise ConfigError(f"BRIDGE_AGENT_KIND={kind!r}: expected python:package.module:factory")
    module_name, name = match["module"], match["factory"]
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the module's own import-time error, whatever it is, stops the
        raise ConfigError(     # start with its name (a SyntaxError, a missing dependency, ...)
            f"BRIDGE_AGENT_KIND={kind!r}: cannot import module {module_name!r} "
            f"({type(exc).__name__}: {exc})") from exc
    factory = getattr(module, name, None)
    if factory is None:
        raise ConfigError(f"BRIDGE_AGENT_KIND={kind!r}: module {module_name!r} has no "
                          f"{name!r}")
    if not callable(factory):
        raise ConfigError(f"BRIDGE_AGENT_KIND={kind!r}: {module_name}.{name} is not callable")
    check_factory(factory, f"{module_name}.{name}")
    return factory  # type: ignore[no-any-return]  # checked above as far as Python allows


def check_factory(factory: Callable[..., object], name: str) -> None:
    """ConfigError unless `factory` can be called with one AgentContext and returns at once."""
    if inspect.iscoroutinefunction(factory):
        raise ConfigError(f"agent factory {name} is async: it must return the agent itself "
                          "(do async set-up in the agent's handle of call_started)")
    try:
        inspect.signature(factory).bind(None)
    except TypeError:
        raise ConfigError(f"agent factory {name} must take one argument (the call's "
                          "AgentContext)") from None
    except ValueError:  # no signature to read (a C callable): the first call will tell
        pass


class InProcessAgents:
    """Builds the in-process agent of each call with a checked factory."""

    def __init__(self, factory: AgentFactory, context: AgentContext, name: str) -> None:
        self._factory = factory
        self._context = context
        self._name = name  # for logs: which factory failed

    def __call__(self) -> Agent:
        try:
            agent = self._factory(self._context)
        except Exception as exc:  # the author's bug costs this call only, with the reason
            log.exception("agent_factory_failed", factory=self._name,
                          error=f"{type(exc).__name__}: {exc}")
            return Unavailable(self._context.settings.agent.fallback)
        missing = [m for m in AGENT_METHODS if not callable(getattr(agent, m, None))]
        if missing:
            log.error("agent_factory_failed", factory=self._name,
                      error=f"returned {type(agent).__name__}, which has no {', '.join(missing)}")
            return Unavailable(self._context.settings.agent.fallback)
        return agent


class Unavailable:
    """Stands in for an agent that could not be built: the caller hears the fallback (if any)
    instead of silence, and the call ends."""

    def __init__(self, fallback: str) -> None:
        self._fallback = fallback

    async def handle(self, call: CallControl, event: AgentEvent) -> None:
        if isinstance(event, CallStarted):
            await call.hangup(self._fallback or None)

    def caller_audio(self, mulaw: bytes) -> None:
        return None

    async def close(self) -> None:
        return None
