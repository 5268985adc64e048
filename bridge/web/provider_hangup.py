"""Ending a call at the provider through its SDK's REST client (when credentials are set).

The SDKs are synchronous (requests), so each call runs in a worker thread. A call that has
already ended (HTTP 404) is not an error: hang-up is idempotent.
"""

from __future__ import annotations

import asyncio
import functools

import plivo
import plivo.exceptions
import plivo.rest.client
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client as TwilioClient

from bridge.call.session import ProviderHangup
from bridge.errors import BridgeError
from bridge.settings import PlivoSettings, TwilioSettings


def _twilio_hangup(settings: TwilioSettings, call_sid: str) -> None:
    client = TwilioClient(settings.account_sid, settings.auth_token)
    if settings.api_base_url:
        client.api.base_url = settings.api_base_url
    try:
        client.calls(call_sid).update(status="completed")
    except TwilioRestException as exc:
        if exc.status != 404:
            raise BridgeError(f"Twilio hang-up failed: HTTP {exc.status}") from None


def _plivo_hangup(settings: PlivoSettings, call_uuid: str) -> None:
    if settings.api_base_url:
        # The SDK reads its voice API address from module constants, not from the client.
        plivo.rest.client.API_VOICE_BASE_URI = f"{settings.api_base_url.rstrip('/')}/v1/Account"
    client = plivo.RestClient(settings.auth_id, settings.auth_token)
    try:
        client.calls.delete(call_uuid)
    except plivo.exceptions.ResourceNotFoundError:
        return  # already ended
    except plivo.exceptions.PlivoRestError as exc:
        raise BridgeError(f"Plivo hang-up failed: {type(exc).__name__}") from None


def hangup_for(provider: str, twilio: TwilioSettings, plivo_settings: PlivoSettings
               ) -> ProviderHangup | None:
    """The provider's hang-up, or None when its credentials are not configured."""
    if provider == "twilio" and twilio.account_sid and twilio.auth_token:
        work = functools.partial(_twilio_hangup, twilio)
    elif provider == "plivo" and plivo_settings.auth_id and plivo_settings.auth_token:
        work = functools.partial(_plivo_hangup, plivo_settings)
    else:
        return None

    async def hangup(call_id: str) -> None:
        await asyncio.to_thread(work, call_id)

    return hangup
