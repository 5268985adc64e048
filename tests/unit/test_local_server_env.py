"""The local TTS server child gets no bridge secrets, only the settings it reads itself."""

import json
import sys

import pytest

from bridge.errors import TTSUnavailable
from bridge.silma.local_server import LocalTTSServer, child_environment

BRIDGE_ENV = {
    "PATH": "/usr/bin",
    "HOME": "/home/bridge",
    "HF_HOME": "/models",
    "CUDA_VISIBLE_DEVICES": "0",
    "BRIDGE_CONFIG": "/etc/bridge.toml",
    "BRIDGE_LOG_FORMAT": "json",
    "BRIDGE_LOG_LEVEL": "debug",
    "BRIDGE_TTS_SERVER_ENGINE": "silma",
    "BRIDGE_TTS_SERVER_SILMA_DEVICE": "cuda",
    "BRIDGE_SECRET_KEY": "fernet-key",
    "BRIDGE_DATABASE_URL": "postgresql://bridge:pw@db/bridge",
    "BRIDGE_DEFAULT_USER_TOKEN": "owner-token",
    "BRIDGE_TWILIO_AUTH_TOKEN": "tw-token",
    "BRIDGE_PLIVO_AUTH_TOKEN": "pl-token",
    "BRIDGE_SILMA_API_KEY": "sk-silma",
    "BRIDGE_SILMA_ENDPOINT": "wss://tts.example/ws",
    "BRIDGE_PUBLIC_URL": "https://bridge.example",
    "BRIDGE_TTS_SERVER": "not a section variable",  # prefix without the underscore
}


def test_only_non_bridge_and_tts_server_settings_pass():
    assert child_environment(BRIDGE_ENV) == {
        "PATH": "/usr/bin",
        "HOME": "/home/bridge",
        "HF_HOME": "/models",
        "CUDA_VISIBLE_DEVICES": "0",
        "BRIDGE_CONFIG": "/etc/bridge.toml",
        "BRIDGE_LOG_FORMAT": "json",
        "BRIDGE_LOG_LEVEL": "debug",
        "BRIDGE_TTS_SERVER_ENGINE": "silma",
        "BRIDGE_TTS_SERVER_SILMA_DEVICE": "cuda",
    }


def test_the_input_is_left_alone():
    given = dict(BRIDGE_ENV)
    child_environment(given)
    assert given == BRIDGE_ENV


async def test_the_started_child_gets_the_filtered_environment(tmp_path, monkeypatch):
    """A real child in place of the TTS server records the names in its environment and exits, so
    start() reports it gone: what LocalTTSServer hands the child, not what the filter returns."""
    monkeypatch.setenv("BRIDGE_SECRET_KEY", "fernet-key")
    monkeypatch.setenv("BRIDGE_DATABASE_URL", "postgresql://bridge:pw@db/bridge")
    monkeypatch.setenv("BRIDGE_TTS_SERVER_ENGINE", "sim")
    seen = tmp_path / "env.json"
    server = LocalTTSServer()
    server._args = [
        sys.executable, "-c",
        "import json, os, sys; json.dump(sorted(os.environ), open(sys.argv[1], 'w')); sys.exit(3)",
        str(seen),
    ]
    with pytest.raises(TTSUnavailable):
        await server.start()
    passed = json.loads(seen.read_text())
    assert "BRIDGE_TTS_SERVER_ENGINE" in passed and "PATH" in passed
    assert "BRIDGE_SECRET_KEY" not in passed and "BRIDGE_DATABASE_URL" not in passed
