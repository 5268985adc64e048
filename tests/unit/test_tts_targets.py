"""Which TTS server a user's calls speak through: target_core.resolve's every branch, and the
shell's pool sweep, which must never start the local TTS server."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.settings import SilmaSettings
from bridge.silma import protocol as p
from bridge.silma import targets as targets_module
from bridge.silma import v2_protocol as v2
from bridge.silma.pools import TTSTarget
from bridge.silma.regions import RegionChoice, RegionSelector
from bridge.silma.target_core import Local, resolve
from bridge.store import DEFAULT_USER_ID, SilmaCredentials, Store

VOICE = p.SynthesizeRequest(text="", reference_audio=b"bridge-clip", reference_text="Bridge.",
                            speed=1.0, seed=42)
MINE = dataclasses.replace(VOICE, reference_audio=b"my-clip", reference_text="Mine.")
BRIDGE = SilmaSettings(endpoint="wss://bridge/ws", api_key="sk-bridge")
BRIDGE_AUTO = SilmaSettings(api_key="sk-bridge")  # no endpoint: the bridge's region, `auto`
BRIDGE_EU = SilmaSettings(api_key="sk-bridge", region="eu-west")
NOTHING = SilmaSettings()
REGIONS = RegionChoice({"us-east": "wss://us/ws", "eu-west": "wss://eu/ws"}, chosen="eu-west")
UNMEASURED = RegionChoice({"us-east": "wss://us/ws", "eu-west": "wss://eu/ws"})
NO_REGIONS = RegionChoice({})
CLOUD = v2.DEFAULT_BASE_URL
BRIDGE_V2 = SilmaSettings(api="v2", endpoint="https://eu.silma.test/tts/v2", api_key="sk-cloud",
                          v2_model="silma-tts-v2-ksa", v2_voice="salma",
                          v2_custom_audio_id="voice_17", v2_user_id="acct-bridge")
SILMA_DEFAULT = v2.V2Voice(model_id="silma-tts-v2-msa", voice_id="sarah", speed=1.0)
BRIDGE_V2_VOICE = v2.V2Voice(model_id="silma-tts-v2-ksa", voice_id="salma",
                             custom_audio_id="voice_17", user_id="acct-bridge", speed=1.0)


def row(**changes: Any) -> SilmaCredentials:
    base = SilmaCredentials(user_id="ann", api_endpoint="", api_key="", is_local=False,
                            region="auto", reference_audio=None, reference_text="",
                            updated_at=datetime(2026, 1, 1, tzinfo=UTC))
    return dataclasses.replace(base, **changes)


def target(endpoint: str, api_key: str = "sk-bridge", voice: p.SynthesizeRequest = VOICE,
           *, user_chosen: bool = False, v2_voice: v2.V2Voice | None = None) -> TTSTarget:
    return TTSTarget(endpoint, api_key, voice, user_chosen=user_chosen, v2_voice=v2_voice)


CASES = [
    # local mode wins over every endpoint, region and key
    ("local mode", row(is_local=True, api_endpoint="wss://ann/ws", api_key="sk-ann",
                       region="us-east"), BRIDGE, REGIONS, Local(VOICE)),
    ("local mode with the user's clip", row(is_local=True, reference_audio=b"my-clip",
                                            reference_text="Mine."), BRIDGE, NO_REGIONS,
     Local(MINE)),
    # the endpoint the tenant typed: untrusted, with their key (else the bridge's)
    ("row endpoint", row(api_endpoint="wss://ann/ws", api_key="sk-ann", region="us-east"),
     BRIDGE, REGIONS, target("wss://ann/ws", "sk-ann", user_chosen=True)),
    # the bridge's key never goes to an endpoint a tenant typed (it would leak to any host)
    ("row endpoint, no key: none", row(api_endpoint="wss://ann/ws"), BRIDGE, NO_REGIONS,
     target("wss://ann/ws", "", user_chosen=True)),
    # the row's region: the operator's endpoint for it
    ("row region", row(region="us-east", api_key="sk-ann"), BRIDGE, REGIONS,
     target("wss://us/ws", "sk-ann")),
    ("row region not configured: the first region", row(region="me-south"), BRIDGE_AUTO,
     REGIONS, target("wss://us/ws")),
    ("row region, no regions: bridge endpoint", row(region="us-east"), BRIDGE, NO_REGIONS,
     target("wss://bridge/ws")),
    # the bridge's endpoint, for a row on `auto` and for no row at all
    ("bridge endpoint", row(), BRIDGE, NO_REGIONS, target("wss://bridge/ws")),
    ("no row: bridge endpoint", None, BRIDGE, NO_REGIONS, target("wss://bridge/ws")),
    ("bridge endpoint over an auto row's regions", row(), BRIDGE, REGIONS,
     target("wss://bridge/ws")),
    # the bridge's region: `auto` is the fastest, else the first until one answered
    ("bridge region auto: fastest", row(), BRIDGE_AUTO, REGIONS, target("wss://eu/ws")),
    ("bridge region auto, unmeasured: first", None, BRIDGE_AUTO, UNMEASURED,
     target("wss://us/ws")),
    ("bridge region named", row(), BRIDGE_EU, UNMEASURED, target("wss://eu/ws")),
    # nothing configured anywhere: our own server
    ("fallback to local", row(api_key="sk-ann"), NOTHING, NO_REGIONS, Local(VOICE)),
    ("no row, nothing configured: local", None, NOTHING, NO_REGIONS, Local(VOICE)),
    # the user's clip replaces the bridge's voice on any target
    ("reference audio override", row(reference_audio=b"my-clip", reference_text="Mine."),
     BRIDGE, NO_REGIONS, target("wss://bridge/ws", voice=MINE)),
    ("row key over the bridge's", row(api_key="sk-ann"), BRIDGE_AUTO, REGIONS,
     target("wss://eu/ws", "sk-ann")),
    ("no keys at all", row(), SilmaSettings(endpoint="wss://bridge/ws"), NO_REGIONS,
     target("wss://bridge/ws", "")),
    ("the row's speed", row(speed=1.3), BRIDGE, NO_REGIONS,
     target("wss://bridge/ws", voice=dataclasses.replace(VOICE, speed=1.3))),
    # SILMA's public API chosen by the tenant: SILMA's cloud unless the bridge has a v2 endpoint
    ("row v2, own key: the cloud, in the row's voice",
     row(api="v2", api_key="sk-ann", v2_model="silma-tts-v2-english", v2_voice="emma",
         v2_custom_audio_id="voice_9", v2_user_id="acct-ann", speed=0.9), BRIDGE, REGIONS,
     target(CLOUD, "sk-ann", dataclasses.replace(VOICE, speed=0.9), v2_voice=v2.V2Voice(
         "silma-tts-v2-english", "emma", "voice_9", "acct-ann", speed=0.9))),
    ("row v2, no key, bridge on our protocol: no key (ours is not SILMA's)", row(api="v2"),
     BRIDGE, NO_REGIONS, target(CLOUD, "", v2_voice=SILMA_DEFAULT)),
    ("row v2, no key, bridge on v2: the bridge's account and cloned voice", row(api="v2"),
     BRIDGE_V2, NO_REGIONS, target("https://eu.silma.test/tts/v2", "sk-cloud",
                                   v2_voice=BRIDGE_V2_VOICE)),
    ("row v2, own key, bridge on v2: the bridge's voice names, not its account",
     row(api="v2", api_key="sk-ann"), BRIDGE_V2, NO_REGIONS,
     target("https://eu.silma.test/tts/v2", "sk-ann", v2_voice=v2.V2Voice(
         "silma-tts-v2-ksa", "salma", speed=1.0))),
    ("row v2, typed endpoint: untrusted, own key only",
     row(api="v2", api_endpoint="https://gpu.ann.test/tts/v2"), BRIDGE_V2, NO_REGIONS,
     target("https://gpu.ann.test/tts/v2", "", user_chosen=True, v2_voice=v2.V2Voice(
         "silma-tts-v2-ksa", "salma", speed=1.0))),
    ("local mode wins over v2", row(api="v2", is_local=True), BRIDGE_V2,
     NO_REGIONS, Local(VOICE)),
    # the bridge on v2: users who chose nothing speak through it
    ("bridge v2, auto row", row(), BRIDGE_V2, REGIONS,
     target("https://eu.silma.test/tts/v2", "sk-cloud", v2_voice=BRIDGE_V2_VOICE)),
    ("bridge v2, an auto row with its own key: the bridge's voice names, not its account",
     row(api_key="sk-ann"), BRIDGE_V2, NO_REGIONS,
     target("https://eu.silma.test/tts/v2", "sk-ann", v2_voice=v2.V2Voice(
         "silma-tts-v2-ksa", "salma", speed=1.0))),
    ("bridge v2, no row, no endpoint: the cloud", None,
     SilmaSettings(api="v2", api_key="sk-cloud"), NO_REGIONS,
     target(CLOUD, "sk-cloud", v2_voice=SILMA_DEFAULT)),
    ("bridge v2, a row on our protocol with a region keeps it", row(api="silma",
                                                                     region="us-east"),
     BRIDGE_V2, REGIONS, target("wss://us/ws", "")),  # the cloud key is not for our servers
    ("bridge v2, a row on our protocol: the bridge's regions, never its v2 endpoint",
     row(api="silma"), BRIDGE_V2, REGIONS, target("wss://eu/ws", "")),
    ("bridge v2, a row on our protocol and no regions: local", row(api="silma"), BRIDGE_V2,
     NO_REGIONS, Local(VOICE)),
]


@pytest.mark.parametrize(("row_", "silma", "regions", "expected"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_resolve(row_: SilmaCredentials | None, silma: SilmaSettings, regions: RegionChoice,
                 expected: TTSTarget | Local) -> None:
    # Equality covers every field: endpoint, API key, voice and user_chosen.
    assert resolve(row_, silma, VOICE, regions) == expected


def test_only_the_tenant_typed_endpoint_gets_a_pool_of_its_own() -> None:
    typed = resolve(row(api_endpoint="wss://bridge/ws"), BRIDGE, VOICE, NO_REGIONS)
    operator = resolve(row(), BRIDGE, VOICE, NO_REGIONS)
    assert isinstance(typed, TTSTarget) and isinstance(operator, TTSTarget)
    assert typed.pool_key != operator.pool_key


class _Child:
    """Stands in for the local TTS server's child process, counting how often one starts."""

    started = 0
    down = False  # never given up on

    def __init__(self, port: int | None = None) -> None:
        self.port = port or 1
        self.url = f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        _Child.started += 1

    async def stop(self) -> None:
        pass


@pytest.fixture
async def targets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                  ) -> AsyncIterator[targets_module.TTSTargets]:
    monkeypatch.setattr(targets_module, "LocalTTSServer", _Child)
    monkeypatch.setattr(_Child, "started", 0)
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path}/bridge.db", "",
                             default_user_token="t")
    await store.update_silma(DEFAULT_USER_ID, is_local=True)
    ann, _ = await store.create_user("Ann")
    await store.update_silma(ann.id, api_endpoint="wss://ann/ws", api_key="sk-ann")
    async with aiohttp.ClientSession() as http:
        targets = targets_module.TTSTargets(store, BRIDGE, VOICE, RegionSelector(http, {}))
        yield targets
        await targets.close()
    await store.close()


async def test_the_pool_sweep_never_starts_the_local_server(
        targets: targets_module.TTSTargets) -> None:
    ann = target("wss://ann/ws", "sk-ann", user_chosen=True).pool_key
    assert await targets.pool_keys_in_use() == {ann}
    assert _Child.started == 0
    # Once a call has started it, the local pool is one to keep.
    local = await targets.for_user(DEFAULT_USER_ID)
    assert local == Local(VOICE).at(_Child().url) and _Child.started == 1
    assert await targets.pool_keys_in_use() == {ann, local.pool_key}
    await targets.for_user(DEFAULT_USER_ID)
    assert _Child.started == 1  # started once, on first need
    assert await targets.for_user("nobody") == local  # no row: the default user's
