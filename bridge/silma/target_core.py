"""Which TTS server a user's calls speak through, decided with no I/O. The shell (targets.py)
reads the user's row, asks `resolve`, and starts our local TTS server when the answer is Local.

The order, first that applies: the user's local mode; the endpoint the user typed; the user's
region; the bridge's endpoint; the bridge's region; else local mode (our own server on loopback,
so a bridge with nothing configured still speaks). A region resolves to its endpoint, `auto` to
the fastest measured one, and a region without an endpoint (or `auto` before any region
answered) to the first configured endpoint.
"""

from __future__ import annotations

import dataclasses

from bridge.settings import SilmaSettings
from bridge.silma import protocol as p
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
    The row's reference clip replaces the bridge's voice, its API key the bridge's key."""
    if row is not None and row.reference_audio:
        voice = dataclasses.replace(voice, reference_audio=row.reference_audio,
                                    reference_text=row.reference_text)
    if row is not None and row.is_local:
        return Local(voice)
    endpoint = (
        (row.api_endpoint if row is not None else "")
        or (region_endpoint(row.region, regions) if row is not None and row.region != AUTO
            else "")
        or silma.endpoint
        or region_endpoint(silma.region, regions)
    )
    if not endpoint:
        return Local(voice)
    api_key = row.api_key if row is not None and row.api_key else silma.api_key
    # Only an endpoint the tenant typed in is untrusted; regions and the bridge's own are the
    # operator's choice.
    user_chosen = row is not None and bool(row.api_endpoint)
    return TTSTarget(endpoint, api_key, voice, user_chosen=user_chosen)
