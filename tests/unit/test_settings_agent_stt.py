"""The agent and speech to text settings: what the start refuses, and naming the variable."""

import pytest

from bridge.errors import ConfigError
from bridge.settings import load_settings


def test_the_defaults_are_a_scripted_agent_without_speech_to_text():
    s = load_settings(env={})
    assert (s.agent.kind, s.stt.backend, s.stt.barge_in) == ("scripted", "none", "voice")
    assert s.agent.fallback and s.agent.remote_reconnect_attempts == 3


@pytest.mark.parametrize("kind", ["scripted", "llm", "python:bridge.agent.examples.echo:create",
                                  "python:agents:make"])
def test_the_agent_kinds(kind):
    assert load_settings(env={"BRIDGE_AGENT_KIND": kind}).agent.kind == kind


def test_words_barge_in_with_a_backend():
    s = load_settings(env={"BRIDGE_STT_BACKEND": "pocketsphinx", "BRIDGE_STT_BARGE_IN": "words",
                           "BRIDGE_STT_BARGE_IN_MIN_WORDS": "2"})
    assert (s.stt.barge_in, s.stt.barge_in_min_words) == ("words", 2)


@pytest.mark.parametrize("env, needle", [
    ({"BRIDGE_AGENT_KIND": "gpt"}, "BRIDGE_AGENT_KIND"),
    ({"BRIDGE_AGENT_KIND": "python:bridge.agent.examples.echo"}, "BRIDGE_AGENT_KIND"),
    ({"BRIDGE_AGENT_KIND": "python:bad-module:create"}, "BRIDGE_AGENT_KIND"),
    ({"BRIDGE_AGENT_KIND": "remote", "BRIDGE_AGENT_REMOTE_URL": "http://x"},
     "BRIDGE_AGENT_REMOTE_URL"),
    ({"BRIDGE_AGENT_REMOTE_CONNECT_TIMEOUT_S": "0"}, "BRIDGE_AGENT_REMOTE_CONNECT_TIMEOUT_S"),
    ({"BRIDGE_AGENT_REMOTE_RECONNECT_ATTEMPTS": "-1"}, "BRIDGE_AGENT_REMOTE_RECONNECT_ATTEMPTS"),
    ({"BRIDGE_AGENT_REMOTE_AUTHORIZATION": "Bearer a\r\nX-Evil: 1"},
     "BRIDGE_AGENT_REMOTE_AUTHORIZATION"),
    ({"BRIDGE_AGENT_FALLBACK": "x" * 2001}, "BRIDGE_AGENT_FALLBACK"),
    ({"BRIDGE_AGENT_KIND": "llm", "BRIDGE_AGENT_LLM_BASE_URL": "api.openai.com"},
     "BRIDGE_AGENT_LLM_BASE_URL"),
    ({"BRIDGE_AGENT_KIND": "llm", "BRIDGE_AGENT_LLM_MODEL": ""}, "BRIDGE_AGENT_LLM_MODEL"),
    ({"BRIDGE_AGENT_LLM_TEMPERATURE": "3"}, "BRIDGE_AGENT_LLM_TEMPERATURE"),
    ({"BRIDGE_AGENT_LLM_MAX_TOKENS": "0"}, "BRIDGE_AGENT_LLM_MAX_TOKENS"),
    ({"BRIDGE_AGENT_LLM_FIRST_TOKEN_TIMEOUT_S": "60", "BRIDGE_AGENT_LLM_REQUEST_TIMEOUT_S": "30"},
     "FIRST_TOKEN_TIMEOUT_S"),
    ({"BRIDGE_AGENT_LLM_SYSTEM_PROMPT": "x" * 20_001}, "BRIDGE_AGENT_LLM_SYSTEM_PROMPT"),
    ({"BRIDGE_STT_BACKEND": "whisper"}, "BRIDGE_STT_BACKEND"),
    ({"BRIDGE_STT_BACKEND": "openai", "BRIDGE_STT_URL": "wss://x"}, "BRIDGE_STT_URL"),
    ({"BRIDGE_STT_BACKEND": "deepgram", "BRIDGE_STT_URL": "ftp://x"}, "BRIDGE_STT_URL"),
    ({"BRIDGE_STT_BARGE_IN": "cough"}, "BRIDGE_STT_BARGE_IN"),
    ({"BRIDGE_STT_BARGE_IN": "words"}, "BRIDGE_STT_BACKEND"),  # words come from speech to text
    ({"BRIDGE_STT_BARGE_IN_MIN_WORDS": "0"}, "BRIDGE_STT_BARGE_IN_MIN_WORDS"),
    ({"BRIDGE_STT_REQUEST_TIMEOUT_S": "0"}, "BRIDGE_STT_REQUEST_TIMEOUT_S"),
    ({"BRIDGE_STT_LANGUAGE": "en us"}, "BRIDGE_STT_LANGUAGE"),
    ({"BRIDGE_STT_MODEL": "m" * 129}, "BRIDGE_STT_MODEL"),
])
def test_bad_values_name_the_variable(env, needle):
    with pytest.raises(ConfigError, match=needle):
        load_settings(env=env)
