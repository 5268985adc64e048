"""Which agent a call gets: the configured kind, checked once when the bridge starts, then built
fresh for each call (an agent holds one call's state: its history, its socket)."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp

from bridge.agent.base import Agent
from bridge.agent.inprocess import (
    AgentContext,
    AgentFactory,
    InProcessAgents,
    check_factory,
    load_factory,
)
from bridge.agent.llm import LlmAgent
from bridge.agent.remote import RemoteAgent
from bridge.agent.scripted import ScriptedAgent
from bridge.settings import Settings

# One call's agent, built when its stream is accepted.
AgentMaker = Callable[[], Agent]


def agent_maker(settings: Settings, http: aiohttp.ClientSession, *,
                factory: AgentFactory | None = None) -> AgentMaker:
    """How each call's agent is built. `factory` (an embedding app's own, passed to
    open_services) wins over the configured kind; a `python:` kind is imported and checked
    now, so a bad one fails the start (ConfigError), not the calls."""
    agent = settings.agent
    if factory is not None:
        name = getattr(factory, "__qualname__", type(factory).__name__)
        check_factory(factory, name)
        return InProcessAgents(factory, AgentContext(settings, http), name)
    if agent.kind.startswith("python:"):
        return InProcessAgents(load_factory(agent.kind), AgentContext(settings, http),
                               agent.kind)
    if agent.kind == "remote":
        # The header's value is a secret: it goes into the upgrade request only, never a log.
        headers = ({"Authorization": agent.remote_authorization}
                   if agent.remote_authorization else None)
        return lambda: RemoteAgent(http, agent.remote_url,
                                   connect_timeout_s=agent.remote_connect_timeout_s,
                                   headers=headers,
                                   reconnect_attempts=agent.remote_reconnect_attempts,
                                   fallback=agent.fallback)
    if agent.kind == "llm":
        return lambda: LlmAgent(http, agent)
    return lambda: ScriptedAgent(agent.greeting, agent.dtmf)
