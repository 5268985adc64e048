"""The "SILMA TTS" settings page and its JSON API: a user's server mode (local, our API server, or
SILMA's public API v2), endpoint, API key, region, voice and speed; their pronunciation
overrides; their pool's live statistics, a health check, and a spoken preview.

An /api/users/{user_id}/... route is declared for the OWNER principal (bridge/web/access.py):
it serves only the authenticated user's own id (403 otherwise).
Changes go to the store, which the bridge reads at every call: they take effect on the next one.
Validation failures answer {"errors": {field: message}}, one message per offending field.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Collection
from typing import Any, NamedTuple

import numpy as np
from aiohttp import web

from bridge.audio.codec import decode_audio, wav_bytes
from bridge.call import lexicon
from bridge.errors import AudioFormatError, TTSError, TTSUnavailable
from bridge.silma import protocol as p
from bridge.silma import v2_protocol as v2
from bridge.silma.endpoint import OURS, V2
from bridge.silma.fleet import Fleet
from bridge.silma.pool import KEY_REFUSED
from bridge.silma.pools import TTSTarget
from bridge.silma.protocol import SPEED_RANGE
from bridge.silma.regions import AUTO, REGIONS
from bridge.silma.target_core import Local, resolve
from bridge.store import PronunciationOverride, SilmaCredentials
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


class Mode(NamedTuple):
    label: str  # the page's button
    changes: dict[str, Any]  # what choosing it stores


MODES = {
    "local": Mode("Local", {"is_local": True}),  # the API stays as chosen, for the way back
    "api": Mode("API Server (Fast)", {"is_local": False, "api": OURS}),
    "v2": Mode("SILMA public API", {"is_local": False, "api": V2}),
}
_MODE_CHOICES = ", ".join(f'"{name}"' for name in MODES)
MODEL_LABELS = {"silma-tts-v2-english": "English", "silma-tts-v2-msa": "Arabic (MSA)",
                "silma-tts-v2-ksa": "Arabic (Saudi)"}
# The voices SILMA's cloud documents; any other well-formed name is accepted (new voices).
KNOWN_VOICES = {"james": "English", "emma": "English", "sarah": "Arabic", "salma": "Arabic",
                "salwa": "Arabic", "saja": "Arabic", "sultan": "Arabic", "salman": "Arabic",
                "sulaiman": "Arabic", "salim": "Arabic"}
MAX_VOICE_CHARS = 64
VOICE_NAME = re.compile(rf"[a-z0-9_-]{{1,{MAX_VOICE_CHARS}}}")
MAX_API_KEY_CHARS = 1024
ENDPOINT_PLACEHOLDERS = {"api": "https://tts.example.com", "v2": v2.DEFAULT_BASE_URL}
MAX_PREVIEW_CHARS = 300
PREVIEW_TEXT = "Hello! This is how I will sound on the phone."
# Which server a call speaks to never depends on the voice: the page resolves with none.
_ANY_VOICE = p.SynthesizeRequest(text="")


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


def _mode(row: SilmaCredentials) -> str:
    if row.is_local:
        return "local"
    return "v2" if row.api == V2 else "api"


class Effective(NamedTuple):
    """What a user's calls speak to now, as the page says it."""

    kind: str  # local | yours | region | cloud | bridge
    summary: str  # "the bridge's local TTS server", "your endpoint", ...
    endpoint: str  # "" for the local server until it runs where settings do not say
    note: str = ""  # why, where the choice on the page would not tell


def _effective(ctx: BridgeContext, row: SilmaCredentials) -> Effective:
    """The decision calls make (target_core.resolve, as TTSTargets.for_user asks it) on `row`,
    named by where its answer comes from. Nothing is started or probed to say it: the local
    server is named without starting it (its address is the pool's, on the page)."""
    silma, regions = ctx.settings.silma, ctx.services.regions
    target = resolve(row, silma, _ANY_VOICE, regions.choice())
    if isinstance(target, Local):
        note = "" if row.is_local else ("No endpoint is set here and the bridge has none: "
                                        "calls fall back to its local server.")
        return Effective("local", "the bridge's local TTS server", silma.local_server_url, note)
    if target.user_chosen:
        return Effective("yours", "your endpoint", target.endpoint)
    region = next((r for r, url in regions.endpoints.items() if url == target.endpoint), None)
    if region is not None:
        return Effective("region", f"the {REGIONS.get(region, region)} region's server",
                         target.endpoint)
    if target.endpoint == v2.DEFAULT_BASE_URL:
        return Effective("cloud", "SILMA's cloud", target.endpoint)
    return Effective("bridge", "the bridge's endpoint", target.endpoint)


def _view(ctx: BridgeContext, row: SilmaCredentials) -> dict[str, Any]:
    """public() (the key masked) plus the mode and what calls use now ("local" as the endpoint
    of the local server)."""
    effective = _effective(ctx, row)
    return {**row.public(), "mode": _mode(row), "effective": effective._asdict(),
            "effective_endpoint": "local" if effective.kind == "local" else effective.endpoint}


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise FieldError("body", "not valid JSON") from None
    if not isinstance(body, dict):
        raise FieldError("body", "expected a JSON object")
    return body


# -- one checker per field: its value -> the store changes it asks for, or ValueError ---------
def _checked_mode(value: object) -> dict[str, Any]:
    if isinstance(value, str) and value in MODES:
        return MODES[value].changes
    raise ValueError(f"mode must be one of {_MODE_CHOICES}")


def _checked_key(value: object) -> dict[str, Any]:
    # The message never quotes the value: it is a secret.
    if not isinstance(value, str) or not value.isprintable() or len(value) > MAX_API_KEY_CHARS:
        raise ValueError(f"the API key must be printable text of at most {MAX_API_KEY_CHARS} "
                         "characters")
    return {"api_key": value.strip()}  # "" removes the key


def _checked_region(value: object, *, configured: Collection[str]) -> dict[str, Any]:
    """A region the bridge has a server in, or auto. A known region without one is refused
    by name: calls would silently go elsewhere (target_core falls back to another server)."""
    if isinstance(value, str) and (value == AUTO or value in configured):
        return {"region": value}
    if not isinstance(value, str) or value not in REGIONS:
        raise ValueError(f"region must be {AUTO} or one of {', '.join(REGIONS)}")
    if not configured:
        raise ValueError(f"this bridge has no server in {REGIONS[value]}: it has no API "
                         "server regions, so keep Auto-detect")
    choices = ", ".join(REGIONS.get(r, r) for r in configured)
    raise ValueError(f"this bridge has no server in {REGIONS[value]}: choose Auto-detect or "
                     f"one of {choices}")


def _checked_model(value: object) -> dict[str, Any]:
    if isinstance(value, str) and (value == "" or value in v2.MODELS):
        return {"v2_model": value}  # "" = the bridge's
    raise ValueError(f"model must be one of {', '.join(v2.MODELS)}, or empty for the bridge's")


def _checked_voice(value: object) -> dict[str, Any]:
    name = value.strip() if isinstance(value, str) else None
    if name is not None and (name == "" or VOICE_NAME.fullmatch(name)):
        return {"v2_voice": name}  # "" = the bridge's
    raise ValueError(f"voice must be lower-case letters, digits, _ or - (at most "
                     f"{MAX_VOICE_CHARS}), e.g. {v2.DEFAULT_VOICE}; or empty for the bridge's")


def _id_checker(column: str, what: str) -> Callable[[object], dict[str, Any]]:
    """A checker of an id on the user's SILMA account: printable, bounded as the API bounds it;
    "" clears it."""
    def check(value: object) -> dict[str, Any]:
        text = value.strip() if isinstance(value, str) else None
        if text is None or not text.isprintable() or len(text) > v2.MAX_ID_CHARS:
            raise ValueError(f"the {what} must be printable text of at most {v2.MAX_ID_CHARS} "
                             "characters")
        return {column: text}
    return check


def _checked_speed(value: object) -> dict[str, Any]:
    low, high = SPEED_RANGE
    if value is None:
        return {"clear_speed": True}  # back to the bridge's
    # bool is an int to Python: refused. JSON's NaN and Infinity parse as floats, and fail the
    # range test (as does an int too large for a float, compared exactly).
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not low <= value <= high:
        raise ValueError(f"speed must be a number from {low:g} to {high:g}, or null for the "
                         "bridge's")
    return {"speed": float(value)}


FIELD_CHECKS: dict[str, Callable[[object], dict[str, Any]]] = {
    "mode": _checked_mode,
    "api_key": _checked_key,
    "v2_model": _checked_model,
    "v2_voice": _checked_voice,
    "v2_custom_audio_id": _id_checker("v2_custom_audio_id", "custom voice id"),
    "v2_user_id": _id_checker("v2_user_id", "SILMA user id"),
    "speed": _checked_speed,
}
SILMA_FIELDS = frozenset({*FIELD_CHECKS, "region", "api_endpoint"})


async def _checked_endpoint(value: object, *, allow_private: bool) -> dict[str, Any]:
    """Any API's endpoint (ours, or a v2 base such as SILMA's cloud) through the SSRF guard."""
    if not isinstance(value, str):
        raise ValueError("the endpoint must be a string")
    if not value.strip():
        return {"api_endpoint": ""}  # back to the region or the bridge's endpoint
    return {"api_endpoint": await check_endpoints(value, allow_private=allow_private)}


def _v2_voice_problems(row: SilmaCredentials, changes: dict[str, Any]) -> dict[str, str]:
    """What SILMA's API would refuse in the row as it would be stored: a custom voice without
    its account. Only the row's own ids: its model and voice fall back to the bridge's."""
    if not changes.keys() & {"v2_custom_audio_id", "v2_user_id"}:
        return {}  # a save of other fields is not blocked by ids it does not touch
    voice = v2.V2Voice(
        custom_audio_id=changes.get("v2_custom_audio_id", row.v2_custom_audio_id) or None,
        user_id=changes.get("v2_user_id", row.v2_user_id) or None)
    problems = voice.problems()
    return {"v2_user_id": "; ".join(problems)} if problems else {}


async def _silma_changes(body: dict[str, Any], row: SilmaCredentials, *, allow_private: bool,
                         regions: Collection[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The store changes `body` asks for of `row`, and an error per field that is not valid.
    `regions`: those the bridge has a server in."""
    changes: dict[str, Any] = {}
    errors = {field: "unknown field" for field in body.keys() - SILMA_FIELDS}
    checks: dict[str, Callable[[object], dict[str, Any]]] = {
        **FIELD_CHECKS, "region": functools.partial(_checked_region, configured=regions)}
    for field, check in checks.items():
        if field in body:
            try:
                changes.update(check(body[field]))
            except ValueError as exc:
                errors[field] = str(exc)
    if "api_endpoint" in body:
        try:
            changes.update(await _checked_endpoint(body["api_endpoint"],
                                                   allow_private=allow_private))
        except ValueError as exc:
            errors["api_endpoint"] = str(exc)
    if not errors:
        errors = _v2_voice_problems(row, changes)
    return changes, errors


@field_errors
async def get_silma(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    return web.json_response(_view(ctx, await _row(ctx, _owner(request))))


@field_errors
async def put_silma(request: web.Request) -> web.StreamResponse:
    user_id = _owner(request)
    ctx = context(request)
    body = await _json_object(request)
    changes, errors = await _silma_changes(
        body, await _row(ctx, user_id), allow_private=ctx.settings.silma.allow_private_endpoints,
        regions=ctx.services.regions.endpoints)
    if errors:
        return errors_response(errors)
    row = await ctx.services.store.update_silma(user_id, **changes)
    # The pool this user left drains once no call uses it, on every bridge of the fleet.
    await ctx.services.settings_changed(user_id)
    if not row.is_local:
        await _user_pool(ctx, user_id)  # warm now, so the next call finds ready connections
    return web.json_response(_view(ctx, row))


@field_errors
async def get_pool(request: web.Request) -> web.StreamResponse:
    user_id = _owner(request)
    return web.json_response((await _user_pool(context(request), user_id)).stats())


def _health_error(where: str, status: str) -> tuple[str, str]:
    """The field a failed health check blames. Both APIs' pools report a refused key as
    KEY_REFUSED (a 401/403 on the health route or the upgrade) and a server they cannot get
    to as "unreachable: ..." (SILMA's v2 has no health route: its upgrade failing is that)."""
    if status == KEY_REFUSED:
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


def _pronunciation_view(entries: list[PronunciationOverride]) -> dict[str, Any]:
    return {"overrides": [entry.public() for entry in entries],
            "limits": {"max_overrides": lexicon.MAX_OVERRIDES,
                       "max_written_chars": lexicon.MAX_WRITTEN_CHARS,
                       "max_spoken_chars": lexicon.MAX_SPOKEN_CHARS}}


@field_errors
async def get_pronunciation(request: web.Request) -> web.StreamResponse:
    entries = await context(request).services.store.pronunciation(_owner(request))
    return web.json_response(_pronunciation_view(entries))


@field_errors
async def put_pronunciation(request: web.Request) -> web.StreamResponse:
    """The whole list, replaced: {"overrides": [{"written", "spoken", "match_case"?}, ...]}.
    Calls that start from now on say it (a call under way keeps the list it started with)."""
    user_id = _owner(request)
    body = await _json_object(request)
    errors = {field: "unknown field" for field in body.keys() - {"overrides"}}
    if "overrides" not in body:
        errors["overrides"] = "missing: send the whole list (an empty one clears it)"
    entries, problems = lexicon.check_overrides(body.get("overrides", []))
    errors.update(problems)
    if errors:
        return errors_response(errors)
    try:
        stored = await context(request).services.store.replace_pronunciation(user_id, entries)
    except LookupError:
        raise json_error(web.HTTPNotFound, "no such user") from None
    return web.json_response(_pronunciation_view(stored))


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
    return web.json_response(_view(ctx, row))


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
    # Said as a call would say it: with the user's own pronunciation overrides.
    spoken = (await ctx.services.lexicons.for_user(user_id)).rewrite(text.strip())
    chunks: list[np.ndarray] = []
    rate = 0
    try:
        async with ctx.services.pools.client(await _target(ctx, user_id)) as client:
            async for piece in client.synthesize(spoken):
                samples, rate = decode_audio(piece.data, piece.format, piece.sample_rate)
                chunks.append(samples)
    except TTSUnavailable as exc:
        raise FieldError("api_endpoint", f"cannot reach the TTS server: {exc}", 502) from exc
    except (TTSError, AudioFormatError) as exc:
        raise FieldError("text", f"the TTS server could not speak this: {exc}", 502) from exc
    if not chunks:
        raise FieldError("text", "the TTS server sent no audio", 502)
    return web.Response(body=wav_bytes(np.concatenate(chunks), rate), content_type="audio/wav")


def _options(choices: list[tuple[str, str]], selected: str) -> Markup:
    return Markup("".join(
        f'<option value="{escape(value)}"{" selected" if value == selected else ""}>'
        f"{escape(label)}</option>"
        for value, label in choices))


def _region_options(selected: str, configured: Collection[str]) -> Markup:
    """Every region, those the bridge has no server in said so (choosing one is refused)."""
    return _options([(AUTO, "Auto-detect (Recommended)"),
                     *((r, label if r in configured else f"{label} (no server on this bridge)")
                       for r, label in REGIONS.items())], selected)


def _model_options(selected: str, bridge_model: str) -> Markup:
    choices = [("", f"Bridge default ({bridge_model})"),
               *((m, f"{MODEL_LABELS.get(m, m)} ({m})") for m in v2.MODELS)]
    return _options(choices, selected)


def _voice_list() -> Markup:
    return Markup("".join(f'<option value="{escape(name)}">{escape(language)}</option>'
                          for name, language in KNOWN_VOICES.items()))


def _mode_buttons(selected: str) -> Markup:
    """One toggle button per mode, the chosen one pressed (settings.js keeps them so)."""
    return Markup("".join(
        f'<button type="button" class="mode{" selected" if name == selected else ""}" '
        f'data-mode="{escape(name)}" aria-pressed="{str(name == selected).lower()}">'
        f"{escape(mode.label)}</button>"
        for name, mode in MODES.items()))


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
                      "auto-detect follows the bridge's own server (\u201cCalls use\u201d "
                      "says which).</p>")
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


def _override_row(entry: PronunciationOverride) -> Markup:
    """One row of the pronunciation table; settings.js numbers the rows (input labels, error
    slots) and clones the empty one in the page's <template> for "Add"."""
    checked = " checked" if entry.match_case else ""
    cells = "".join(
        f'<td data-label="{label}"><input type="text" data-field="{field}" dir="auto" '
        f'value="{escape(value)}" autocomplete="off" spellcheck="false">'
        f'<p class="field-error" data-error="{field}" role="alert"></p></td>'
        for field, label, value in (("written", "Written", entry.written),
                                    ("spoken", "Spoken", entry.spoken)))
    return Markup(
        f'<tr>{cells}<td class="case" data-label="Match case"><label><input type="checkbox" '
        f'data-field="match_case"{checked}><span>Match case</span></label>'
        '<p class="field-error" data-error="match_case" role="alert"></p></td>'
        '<td class="remove"><button type="button" class="remove-row">Remove</button>'
        '<p class="field-error" data-error="row" role="alert"></p></td></tr>')


async def settings_page(request: web.Request) -> web.StreamResponse:
    user = current_user(request)
    ctx = context(request)
    row = await _row(ctx, user.id)
    overrides = await ctx.services.store.pronunciation(user.id)
    effective = _effective(ctx, row)
    bridge = ctx.settings.silma
    mode = _mode(row)
    return render(
        "settings.html",
        user_id=user.id, display_name=user.display_name or user.id, csrf=csrf_token(request),
        mode=mode, mode_buttons=_mode_buttons(mode),
        api_endpoint=row.api_endpoint,
        endpoint_placeholder=ENDPOINT_PLACEHOLDERS.get(mode, ENDPOINT_PLACEHOLDERS["api"]),
        api_endpoint_placeholder=ENDPOINT_PLACEHOLDERS["api"],
        v2_endpoint_placeholder=ENDPOINT_PLACEHOLDERS["v2"],
        api_key_placeholder=row.public()["api_key"] or "not set",
        effective_kind=effective.kind, effective_summary=effective.summary,
        effective_endpoint=effective.endpoint, effective_note=effective.note,
        model_options=_model_options(row.v2_model, bridge.v2_model),
        v2_voice=row.v2_voice, bridge_voice=bridge.v2_voice, voice_list=_voice_list(),
        max_voice=MAX_VOICE_CHARS, max_id=v2.MAX_ID_CHARS,
        v2_custom_audio_id=row.v2_custom_audio_id, v2_user_id=row.v2_user_id,
        speed="" if row.speed is None else row.speed, bridge_speed=bridge.speed,
        speed_min=SPEED_RANGE[0], speed_max=SPEED_RANGE[1],
        region_options=_region_options(row.region, ctx.services.regions.endpoints),
        region_view=_region_view(ctx),
        voice_summary=_voice_summary(row), preview_text=PREVIEW_TEXT,
        max_clip_mb=MAX_CLIP_BYTES // (1024 * 1024), max_preview=MAX_PREVIEW_CHARS,
        override_rows=Markup("".join(_override_row(entry) for entry in overrides)),
        override_template=_override_row(PronunciationOverride("", "")),
        max_overrides=lexicon.MAX_OVERRIDES, max_written=lexicon.MAX_WRITTEN_CHARS,
        max_spoken=lexicon.MAX_SPOKEN_CHARS,
    )
