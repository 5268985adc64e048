"""Admission at the answer webhooks: a call the bridge cannot serve now is answered busy, with
its reason counted and logged, instead of being answered into silence (call/admission_core.py
decides; this shell gathers what it decides on)."""

from __future__ import annotations

import asyncio

import structlog

from bridge.call.admission_core import Refuse
from bridge.silma.capacity import Capacity
from bridge.web.context import BridgeContext

log = structlog.get_logger("bridge.web")


async def _capacity(ctx: BridgeContext, user_id: str) -> Capacity:
    """The capacity of the TTS this user's call would speak through (its pool is opened now:
    the call needs it in a second anyway). Unknown when the target cannot be had; the call then
    fails as it would have, with its reason, and only max_calls bounds admission."""
    try:
        target = await ctx.services.targets.for_user(user_id)
        return (await ctx.services.pools.pool_for(target)).capacity()
    except Exception as exc:  # a failing store or TTS must not take the webhook down
        log.warning("admission_capacity_unknown", user=user_id,
                    error=f"{type(exc).__name__}: {exc}"[:300])
        return Capacity()


async def refusal(ctx: BridgeContext, provider: str, user_id: str, call_id: str
                  ) -> Refuse | None:
    """Why `call_id` is refused, or None when it is admitted (its place is then reserved)."""
    # A draining bridge refuses whatever the TTS can do: no pool is opened for it.
    capacity = Capacity() if ctx.drain.draining else await _capacity(ctx, user_id)
    registry = ctx.registry
    # In a fleet the TTS servers are shared: the other bridges' callers waiting for first
    # words are ahead of this one too (their count as of the last heartbeat).
    elsewhere = ctx.services.fleet.others_waiting if ctx.services.fleet is not None else 0
    decision = ctx.admission.decide(call_id, asyncio.get_running_loop().time(),
                                    live=registry.live.keys(),
                                    waiting=registry.waiting_for_audio() + elsewhere,
                                    capacity=capacity,
                                    draining=ctx.drain.draining)
    if not isinstance(decision, Refuse):
        return None
    registry.metrics.calls_refused.labels(provider, decision.reason).inc()
    log.warning("call_refused", provider=provider, call_id=call_id, user=user_id,
                reason=decision.reason, detail=decision.detail)
    return decision
