import pytest

from bridge.errors import ConfigError
from bridge.settings import load_settings


def test_defaults_load():
    s = load_settings(env={})
    assert s.port == 8080
    assert s.tts_server.engine == "piper"
    assert s.agent.dtmf["1"]


def test_env_overrides_by_type():
    s = load_settings(env={"BRIDGE_PORT": "9090", "BRIDGE_CALL_LEAD_MS": "120",
                           "BRIDGE_SILMA_REQUEST_ULAW": "false",
                           "BRIDGE_PUBLIC_URL": "https://bridge.example.com"})
    assert (s.port, s.call.lead_ms, s.silma.request_ulaw) == (9090, 120, False)
    assert s.public_url == "https://bridge.example.com"


@pytest.mark.parametrize("env, needle", [
    ({"BRIDGE_PORT": "eighty"}, "BRIDGE_PORT"),
    ({"BRIDGE_SILMA_REQUEST_ULAW": "maybe"}, "BRIDGE_SILMA_REQUEST_ULAW"),
    ({"BRIDGE_PUBLIC_URL": "ftp://x"}, "BRIDGE_PUBLIC_URL"),
    ({"BRIDGE_CALL_LEAD_MS": "5"}, "BRIDGE_CALL_LEAD_MS"),
    ({"BRIDGE_ADMISSION_MAX_CALLS": "-1"}, "admission"),
    ({"BRIDGE_ADMISSION_FIRST_WORDS_S": "0"}, "admission"),
    ({"BRIDGE_ADMISSION_BUSY_MESSAGE": "x" * 501}, "BRIDGE_ADMISSION_BUSY_MESSAGE"),
    ({"BRIDGE_CALL_INACTIVITY_TIMEOUT_S": "0"}, "BRIDGE_CALL_INACTIVITY_TIMEOUT_S"),
    ({"BRIDGE_CALL_DRAIN_DEADLINE_S": "-1"}, "BRIDGE_CALL_DRAIN_DEADLINE_S"),
    ({"BRIDGE_CALL_DRAIN_GOODBYE": "x" * 501}, "BRIDGE_CALL_DRAIN_GOODBYE"),
    ({"BRIDGE_SILMA_API": "v3"}, "BRIDGE_SILMA_API"),
    ({"BRIDGE_SILMA_API": "v2", "BRIDGE_SILMA_V2_CUSTOM_AUDIO_ID": "voice_1"},
     "BRIDGE_SILMA_V2_USER_ID"),
])
def test_bad_values_name_the_variable(env, needle):
    with pytest.raises(ConfigError, match=needle):
        load_settings(env=env)


def test_secrets_not_in_repr():
    s = load_settings(env={"BRIDGE_TWILIO_AUTH_TOKEN": "sekrit-token",
                           "BRIDGE_SILMA_API_KEY": "sekrit-key"})
    assert s.twilio.auth_token == "sekrit-token"
    assert "sekrit" not in repr(s)


def test_silma_cloud_from_the_environment():
    s = load_settings(env={"BRIDGE_SILMA_API": "v2", "BRIDGE_SILMA_V2_MODEL": "silma-tts-v2-ksa",
                           "BRIDGE_SILMA_V2_VOICE": "salim"})
    assert (s.silma.api, s.silma.v2_model, s.silma.v2_voice) == ("v2", "silma-tts-v2-ksa",
                                                                 "salim")
