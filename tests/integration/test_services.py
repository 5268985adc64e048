"""The bridge's services, opened before the app takes a request: regions are measured by then,
and the bridge's own endpoint leaves nothing to measure."""

from __future__ import annotations

import dataclasses

from bridge.settings import Settings
from bridge.store import DEFAULT_USER_ID
from tests.servers import bridge_services, make_settings

DEAD = "http://127.0.0.1:9"  # nothing listens on the discard port


def with_regions(endpoint: str, regions: dict[str, str]) -> Settings:
    base = make_settings()
    return base.replace(silma=dataclasses.replace(base.silma, endpoint=endpoint, regions=regions),
                        pool=dataclasses.replace(base.pool, warm=0))


async def test_regions_are_measured_before_the_services_are_handed_out(tts):
    regions = {"us-east": DEAD, "eu-west": tts.url}
    async with bridge_services(with_regions("", regions)) as services:
        view = services.regions.view()
        assert view is not None and view["chosen"] == "eu-west"
        assert {r["id"]: r["round_trip_ms"] is None for r in view["regions"]} == {
            "us-east": True, "eu-west": False}
        target = await services.targets.for_user(DEFAULT_USER_ID)
        assert (target.endpoint, target.user_chosen) == (tts.url, False)


async def test_the_bridges_endpoint_leaves_no_regions_to_measure(tts):
    async with bridge_services(with_regions(tts.url, {"us-east": DEAD})) as services:
        assert services.regions.view() is None
        assert (await services.targets.for_user(DEFAULT_USER_ID)).endpoint == tts.url
