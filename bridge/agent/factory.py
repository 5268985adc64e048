"""Which agent a call gets: the configured kind, built for one call."""

from __future__ import annotations

import aiohttp

from bridge.agent.base import Agent
from bridge.agent.remote import RemoteAgent
from bridge.agent.scripted import ScriptedAgent
from bridge.settings import AgentSettings


def agent_for_call(settings: AgentSettings, http: aiohttp.ClientSession) -> Agent:
    if settings.kind == "remote":
        return RemoteAgent(http, settings.remote_url,
                           connect_timeout_s=settings.remote_connect_timeout_s)
    return ScriptedAgent(settings.greeting, settings.dtmf)
