"""The "SILMA TTS" settings page and its JSON API: a user's server mode, endpoint, API key, region
and voice; their pool's live statistics, a health check, and a spoken preview.

An /api/users/{user_id}/... route is declared for the OWNER principal (bridge/web/access.py):
it serves only the authenticated user's own id (403 otherwise).
Changes go to the store, which the bridge reads at every call: they take effect on the next one.
Validation failures answer {"errors": {field: message}}, one message per offending field.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from aiohttp import web

from bridge.audio.codec import decode_audio, wav_bytes
from bridge.errors import AudioFormatError, TTSError, TTSUnavailable
from bridge.silma.fleet import Fleet
from bridge.silma.pools import TTSTarget
from bridge.silma.regions import AUTO, REGIONS
from bridge.store import SilmaCredentials
from bridge.web.access import current_user
from bridge.web.auth import csrf_token, json_error
from bridge.web.context import BridgeContext, context
from bridge.web.field_errors import FieldError, errors_response, field_errors
from bridge.web.templating import Markup, escape, render
from bridge.web.url_guard import check_endpoints
from bridge.web.voice_clip import (
    MAX_CLIP_BYTES,
    checked_transcript,
    normalized_clip,
    read_voice_upload,
)

MODES = {"local": True, "api": False}  # mode -> is_local
SILMA_FIELDS = frozenset({"mode", "api_endpoint", "api_key", "region"})
MAX_API_KEY_CHARS = 1024
MAX_PREVIEW_CHARS = 300
PREVIEW_TEXT = "Hello! This is how I will sound on the phone."


def _owner(request: web.Request) -> str:
    """The id in the path, which the access middleware has checked is the user's own."""
    return current_user(request).id


async def _row(ctx: BridgeContext, user_id: str) -> SilmaCredentials:
    row = await ctx.services.store.silma(user_id)
    if row is None:
        raise json_error(web.HTTPNotFound, "no SILMA settings for this user")
    return row


async def _target(ctx: BridgeContext, user_id: str) -> TTSTarget:
    try:
        return await ctx.services.targets.for_user(user_id)
    except TTSUnavailable as exc:  # local mode: our TTS server failed to start
        raise FieldError("mode", str(exc), 503) from exc


async def _user_pool(ctx: BridgeContext, user_id: str) -> Fleet:
    return await ctx.services.pools.pool_for(await _target(ctx, user_id))


async def _view(ctx: BridgeContext, row: SilmaCredentials) -> dict[str, Any]:
    """public() plus the mode and the endpoint calls use now (local mode's server is not started
    just to be named)."""
    effective = "local" if row.is_local else (await _target(ctx, row.user_id)).endpoint
    return {**row.public(), "mode": "local" if row.is_local else "api",
            "effective_endpoint": effective}


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise FieldError("body", "not valid JSON") from None
    if not isinstance(body, dict):
        raise FieldError("body", "expected a JSON object")
    return body


async def _silma_changes(body: dict[str, Any], *, allow_private: bool
                         ) -> tuple[dict[str, Any], dict[str, str]]:
    """The store changes `body` asks for, and an error per field that is not valid."""
    changes: dict[str, Any] = {}
    errors = {field: "unknown field" for field in body.keys() - SILMA_FIELDS}
    if "mode" in body:
        mode = body["mode"]
        if isinstance(mode, str) and mode in MODES:
            changes["is_local"] = MODES[mode]
        else:
            errors["mode"] = 'mode must be "local" or "api"'
    if "api_endpoint" in body:
        url = body["api_endpoint"]
        if not isinstance(url, str):
            errors["api_endpoint"] = "the endpoint must be a string"
        elif not url.strip():
            changes["api_endpoint"] = ""  # back to the region or the bridge's endpoint
        else:
            try:
                changes["api_endpoint"] = await check_endpoints(url, allow_private=allow_private)
            except ValueError as exc:
                errors["api_endpoint"] = str(exc)
    if "api_key" in body:
        key = body["api_key"]
        if not isinstance(key, str) or not key.isprintable() or len(key) > MAX_API_KEY_CHARS:
            errors["api_key"] = (f"the API key must be printable text of at most "
                                 f"{MAX_API_KEY_CHARS} characters")
        else:
            changes["api_key"] = key.strip()  # "" removes the key
    if "region" in body:
        region = body["region"]
        if isinstance(region, str) and (region == AUTO or region in REGIONS):
            changes["region"] = region
        else:
            errors["region"] = f"region must be {AUTO} or one of {', '.join(REGIONS)}"
    return changes, errors


@field_errors
async def get_silma(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    return web.json_response(await _view(ctx, await _row(ctx, _owner(request))))


@field_errors
async def put_silma(request: web.Request) -> web.StreamResponse:
    user_id = _owner(request)
    ctx = context(request)
    changes, errors = await _silma_changes(
        await _json_object(request), allow_private=ctx.settings.silma.allow_private_endpoints)
    if errors:
        return errors_response(errors)
    row = await ctx.services.store.update_silma(user_id, **changes)
    await ctx.services.retire_unused_pools()  # the pool this user left drains once no call uses it
    if not row.is_local:
        await _user_pool(ctx, user_id)  # warm now, so the next call finds ready connections
    return web.json_response(await _view(ctx, row))


@field_errors
async def get_pool(request: web.Request) -> web.StreamResponse:
    user_id = _owner(request)
    return web.json_response((await _user_pool(context(request), user_id)).stats())


def _health_error(where: str, status: str) -> tuple[str, str]:
    if status in ("HTTP 401", "HTTP 403", "API key refused"):
        return "api_key", f"the TTS server at {where} refused the API key ({status})"
    if status.startswith("unreachable"):
        return "api_endpoint", f"cannot reach the TTS server at {where} ({status})"
    return "api_endpoint", f"the TTS server at {where} is not healthy ({status})"


@field_errors
async def health_check(request: web.Request) -> web.StreamResponse:
    user_id = _owner(request)
    pool = await _user_pool(context(request), user_id)
    health = await pool.check_health()
    if health["status"] == "ok":
        return web.json_response({"health": health})
    field, message = _health_error(health["endpoint"], health["status"])
    return errors_response({field: message}, 502, health=health)


@field_errors
async def put_voice(request: web.Request) -> web.StreamResponse:
    user_id = _owner(request)
    ctx = context(request)
    upload = await read_voice_upload(request)
    errors: dict[str, str] = {}
    try:
        clip = normalized_clip(upload.clip)
    except ValueError as exc:
        errors["clip"] = str(exc)
    try:
        transcript = checked_transcript(upload.transcript)
    except ValueError as exc:
        errors["transcript"] = str(exc)
    if errors:
        return errors_response(errors)
    row = await ctx.services.store.update_silma(user_id, reference_audio=clip,
                                                reference_text=transcript)
    return web.json_response(await _view(ctx, row))


@field_errors
async def preview(request: web.Request) -> web.StreamResponse:
    """Speak a line through the user's own target (pool, voice, key): WAV as callers hear it."""
    user_id = _owner(request)
    ctx = context(request)
    text = (await _json_object(request)).get("text")
    if not isinstance(text, str) or not text.strip():
        raise FieldError("text", "type a line to preview")
    if len(text) > MAX_PREVIEW_CHARS:
        raise FieldError("text", f"keep the preview under {MAX_PREVIEW_CHARS} characters")
    chunks: list[np.ndarray] = []
    rate = 0
    try:
        async with ctx.services.pools.client(await _target(ctx, user_id)) as client:
            async for piece in client.synthesize(text.strip()):
                samples, rate = decode_audio(piece.data, piece.format, piece.sample_rate)
                chunks.append(samples)
    except TTSUnavailable as exc:
        raise FieldError("api_endpoint", f"cannot reach the TTS server: {exc}", 502) from exc
    except (TTSError, AudioFormatError) as exc:
        raise FieldError("text", f"the TTS server could not speak this: {exc}", 502) from exc
    if not chunks:
        raise FieldError("text", "the TTS server sent no audio", 502)
    return web.Response(body=wav_bytes(np.concatenate(chunks), rate), content_type="audio/wav")


def _options(selected: str) -> Markup:
    choices = [(AUTO, "Auto-detect (Recommended)"), *REGIONS.items()]
    return Markup("".join(
        f'<option value="{escape(value)}"{" selected" if value == selected else ""}>'
        f"{escape(label)}</option>"
        for value, label in choices))


def _region_row(region: dict[str, Any], chosen: str | None) -> str:
    ms = region["round_trip_ms"]
    fastest = region["id"] == chosen
    row_class = ' class="chosen"' if fastest else ""
    round_trip = "no answer" if ms is None else f"{ms} ms"
    return (f'<tr{row_class}><td>{escape(region["label"])}</td>'
            f'<td class="num">{escape(round_trip)}</td>'
            f'<td>{"fastest" if fastest else ""}</td></tr>')


def _region_view(ctx: BridgeContext) -> Markup:
    """Measured handshake round trips and the fastest region, when regions are configured."""
    view = ctx.services.regions.view()
    if view is None:
        return Markup('<p class="note">No API server regions are configured on this bridge: '
                      "auto-detect uses the bridge's default endpoint.</p>")
    rows = "".join(_region_row(r, view["chosen"]) for r in view["regions"])
    chosen = REGIONS.get(view["chosen"] or "", "none answered yet")
    return Markup(f"<p>Auto-detect chose <strong>{escape(chosen)}</strong>.</p>"
                  '<table class="grid"><thead><tr><th>Region</th><th class="num">Round trip</th>'
                  f"<th></th></tr></thead><tbody>{rows}</tbody></table>")


def _voice_summary(row: SilmaCredentials) -> str:
    if not row.reference_audio:
        return "The TTS server's default voice."
    return (f"Your clip ({len(row.reference_audio) // 1024} KB), "
            f"transcript: \u201c{row.reference_text}\u201d")


async def settings_page(request: web.Request) -> web.StreamResponse:
    user = current_user(request)
    ctx = context(request)
    row = await _row(ctx, user.id)
    try:
        view = await _view(ctx, row)
    except FieldError as exc:  # shown on the page rather than failing it
        view = {"mode": "local" if row.is_local else "api",
                "effective_endpoint": f"unavailable: {exc}"}
    is_api = view["mode"] == "api"
    return render(
        "settings.html",
        user_id=user.id, display_name=user.display_name or user.id, csrf=csrf_token(request),
        mode=view["mode"],
        api_selected="selected" if is_api else "", local_selected="" if is_api else "selected",
        api_pressed=str(is_api).lower(), local_pressed=str(not is_api).lower(),
        api_endpoint=row.api_endpoint,
        api_key_placeholder=row.public()["api_key"] or "not set",
        effective_endpoint=view["effective_endpoint"],
        region_options=_options(row.region), region_view=_region_view(ctx),
        voice_summary=_voice_summary(row), preview_text=PREVIEW_TEXT,
        max_clip_mb=MAX_CLIP_BYTES // (1024 * 1024), max_preview=MAX_PREVIEW_CHARS,
    )
