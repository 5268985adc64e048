"""In-process agents (`python:package.module:factory`): the factory checked once at the start
with a message naming what is wrong, and a factory's failure costing one call, not the bridge."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from bridge.agent.base import CallStarted
from bridge.agent.examples.echo import EchoAgent
from bridge.agent.factory import agent_maker
from bridge.agent.inprocess import AgentContext, InProcessAgents, Unavailable, load_factory
from bridge.agent.llm import LlmAgent
from bridge.agent.remote import RemoteAgent
from bridge.agent.scripted import ScriptedAgent
from bridge.errors import ConfigError
from bridge.settings import load_settings

AGENTS = '''
def one(context):
    return None

def two(context, extra):
    return None

async def later(context):
    return None

not_a_function = 42
'''


@pytest.fixture
def agents_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    (tmp_path / "my_agents.py").write_text(AGENTS)
    (tmp_path / "broken_agents.py").write_text("import no_such_dependency_here\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_agents"
    for name in ("my_agents", "broken_agents"):
        sys.modules.pop(name, None)


def test_the_example_loads():
    from bridge.agent.examples import echo

    assert load_factory("python:bridge.agent.examples.echo:create") is echo.create


@pytest.mark.parametrize("kind, needle", [
    ("python:no_such_module_anywhere:create", "cannot import module 'no_such_module_anywhere'"),
    ("python:broken_agents:create", "No module named 'no_such_dependency_here'"),
    ("python:my_agents:missing", "module 'my_agents' has no 'missing'"),
    ("python:my_agents:not_a_function", "is not callable"),
    ("python:my_agents:two", "must take one argument"),
    ("python:my_agents:later", "is async"),
    ("python:my_agents", "expected python:package.module:factory"),
])
def test_a_bad_factory_stops_the_start_naming_what_is_wrong(agents_module, kind, needle):
    with pytest.raises(ConfigError, match=needle):
        load_factory(kind)


async def test_each_kind_builds_its_agent_per_call():
    base = load_settings(env={})
    kinds = {
        "scripted": ScriptedAgent,
        "llm": LlmAgent,
        "python:bridge.agent.examples.echo:create": EchoAgent,
    }
    async with aiohttp.ClientSession() as http:
        for kind, cls in kinds.items():
            settings = load_settings(env={"BRIDGE_AGENT_KIND": kind})
            make = agent_maker(settings, http)
            first, second = make(), make()
            assert isinstance(first, cls) and first is not second
        remote = load_settings(env={"BRIDGE_AGENT_KIND": "remote",
                                    "BRIDGE_AGENT_REMOTE_URL": "ws://127.0.0.1:1/agent"})
        assert isinstance(agent_maker(remote, http)(), RemoteAgent)
        # An embedding app's own factory wins over the configured kind, and is checked too.
        assert isinstance(agent_maker(base, http, factory=lambda context: EchoAgent(False))(),
                          EchoAgent)
        with pytest.raises(ConfigError, match="must take one argument"):
            agent_maker(base, http, factory=lambda: EchoAgent(False))  # type: ignore[arg-type,misc]


class Call:
    def __init__(self) -> None:
        self.goodbyes: list[str | None] = []

    async def hangup(self, goodbye: str | None = None) -> None:
        self.goodbyes.append(goodbye)


@pytest.mark.parametrize("factory", [
    lambda context: 1 / 0,  # raises
    lambda context: object(),  # returns no agent
])
async def test_a_failing_factory_costs_its_call_the_fallback_and_a_hang_up(factory):
    settings = load_settings(env={"BRIDGE_AGENT_FALLBACK": "Sorry, not now."})
    async with aiohttp.ClientSession() as http:
        agent = InProcessAgents(factory, AgentContext(settings, http), "test")()
    assert isinstance(agent, Unavailable)
    call = Call()
    await agent.handle(call, CallStarted("CA1", "twilio", {}))  # type: ignore[arg-type]
    assert call.goodbyes == ["Sorry, not now."]
