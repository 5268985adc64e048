"""Which TTS server a user's calls speak through, decided with no I/O. The shell (targets.py)
reads the user's row, asks `resolve`, and starts our local TTS server when the answer is Local.

The order, first that applies: the user's local mode; the user's choice of SILMA's public API
(v2: their endpoint, else the bridge's v2 endpoint, else SILMA's cloud); the endpoint the user
typed; the user's region; the bridge's endpoint (in the bridge's API, for users who did not
choose ours); the bridge's region; else local mode (our own server on loopback, so a bridge
with nothing configured still speaks). A region resolves to its endpoint, `auto` to
the fastest measured one, and a region without an endpoint (or `auto` before any region
answered) to the first configured endpoint.
"""

from __future__ import annotations

import dataclasses

from bridge.settings import SilmaSettings
from bridge.silma import protocol as p
from bridge.silma import v2_protocol as v2
from bridge.silma.endpoint import OURS, V2
from bridge.silma.pools import TTSTarget
from bridge.silma.regions import AUTO, RegionChoice
from bridge.store.models import SilmaCredentials


@dataclasses.dataclass(frozen=True)
class Local:
    """Speak through our local TTS server, with this voice; it takes no API key."""

    voice: p.SynthesizeRequest

    def at(self, url: str) -> TTSTarget:
        """The target once the local server runs at `url`."""
        return TTSTarget(url, "", self.voice)


def region_endpoint(region: str, regions: RegionChoice) -> str:
    """`region`'s endpoint ("" with no regions configured)."""
    chosen = regions.chosen if region == AUTO else region
    return regions.endpoints.get(chosen or "") or next(iter(regions.endpoints.values()), "")


def resolve(row: SilmaCredentials | None, silma: SilmaSettings, voice: p.SynthesizeRequest,
            regions: RegionChoice) -> TTSTarget | Local:
    """The target of a user whose SILMA row is `row` (None: no row, the bridge's settings).
    The row's reference clip replaces the bridge's voice, its speed the bridge's speed. The
    bridge's API key goes only to the bridge's own endpoints (its endpoint, its regions, SILMA's
    cloud when the bridge speaks v2): an endpoint a tenant typed gets the tenant's key or none."""
    if row is not None and row.reference_audio:
        voice = dataclasses.replace(voice, reference_audio=row.reference_audio,
                                    reference_text=row.reference_text)
    if row is not None and row.speed is not None:
        voice = dataclasses.replace(voice, speed=row.speed)
    if row is not None and row.is_local:
        return Local(voice)
    own_key = row.api_key if row is not None else ""
    # The bridge's key is for the bridge's API: a SILMA cloud key is not sent to our servers.
    bridge_key = silma.api_key if silma.api == OURS else ""
    if row is not None and row.api == V2:
        return _v2_target(row, silma, voice)
    if row is not None and row.api_endpoint:
        # Only an endpoint the tenant typed in is untrusted; regions and the bridge's own are
        # the operator's choice.
        return TTSTarget(row.api_endpoint, own_key, voice, user_chosen=True)
    if row is not None and row.region != AUTO and (endpoint := region_endpoint(row.region,
                                                                                regions)):
        return TTSTarget(endpoint, own_key or bridge_key, voice)
    # A row that chose our protocol (api "silma") never lands on the bridge's v2 endpoint: it
    # gets the bridge's regions, else local mode. A row that chose nothing follows the bridge.
    follows_bridge = row is None or row.api != OURS
    if silma.api == V2 and follows_bridge:
        return TTSTarget(silma.endpoint or v2.DEFAULT_BASE_URL, own_key or silma.api_key,
                         voice, v2_voice=_v2_voice(row, silma, voice,
                                                   bridge_account=not own_key))
    endpoint = (silma.endpoint if silma.api != V2 else "") or region_endpoint(silma.region,
                                                                              regions)
    if not endpoint:
        return Local(voice)
    return TTSTarget(endpoint, own_key or bridge_key, voice)


def _v2_target(row: SilmaCredentials, silma: SilmaSettings, voice: p.SynthesizeRequest
               ) -> TTSTarget:
    """A tenant on SILMA's public API: their endpoint (untrusted) with their key, else the
    bridge's v2 endpoint (or SILMA's cloud) with their key or, when the bridge speaks v2 too,
    the bridge's account."""
    if row.api_endpoint:
        return TTSTarget(row.api_endpoint, row.api_key, voice, user_chosen=True,
                         v2_voice=_v2_voice(row, silma, voice, bridge_account=False))
    bridge_v2 = silma.api == V2
    endpoint = (silma.endpoint if bridge_v2 and silma.endpoint else v2.DEFAULT_BASE_URL)
    bridge_account = bridge_v2 and not row.api_key
    return TTSTarget(endpoint, row.api_key or (silma.api_key if bridge_account else ""), voice,
                     v2_voice=_v2_voice(row, silma, voice, bridge_account=bridge_account))


def _v2_voice(row: SilmaCredentials | None, silma: SilmaSettings, voice: p.SynthesizeRequest,
              *, bridge_account: bool) -> v2.V2Voice:
    """The row's choices, else the bridge's; the bridge's cloned voice and user id only on
    the bridge's account (they mean nothing on another)."""
    model = (row.v2_model if row is not None else "") or silma.v2_model
    name = (row.v2_voice if row is not None else "") or silma.v2_voice
    custom = (row.v2_custom_audio_id if row is not None else "") or \
        (silma.v2_custom_audio_id if bridge_account else "")
    user = (row.v2_user_id if row is not None else "") or \
        (silma.v2_user_id if bridge_account else "")
    return v2.V2Voice(model_id=model, voice_id=name, custom_audio_id=custom or None,
                      user_id=user or None, speed=voice.speed)
