"""Typed settings: defaults from bridge/default.toml, overridden by BRIDGE_* environment variables.

This is the only module that reads the environment. A top-level key `port` is overridden by
BRIDGE_PORT, a key `port` of section [tts_server] by BRIDGE_TTS_SERVER_PORT. Values are parsed by
the field's type; a value that does not parse raises ConfigError naming the variable.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_type_hints

from bridge.errors import ConfigError

DEFAULT_CONFIG = Path(__file__).resolve().parent / "default.toml"  # package data: in the wheel
ENV_PREFIX = "BRIDGE_"
# An in-process agent: "python:" then an importable module path and the factory's name in it.
PYTHON_AGENT = re.compile(r"python:(?P<module>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)"
                          r":(?P<factory>[A-Za-z_]\w*)")
AGENT_KINDS = ("scripted", "remote", "llm")
STT_BACKENDS = ("none", "pocketsphinx", "openai", "deepgram")


@dataclasses.dataclass(frozen=True)
class SilmaSettings:
    # "silma": our protocol (our TTS server); "v2": SILMA's public API (its cloud, or our server's
    # v2 routes), spoken in v2_model / v2_voice.
    api: str = "silma"
    endpoint: str = ""
    api_key: str = dataclasses.field(default="", repr=False)
    v2_model: str = "silma-tts-v2-msa"
    v2_voice: str = "sarah"
    # A cloned voice on the SILMA account (needs v2_user_id), instead of v2_voice.
    v2_custom_audio_id: str = ""
    v2_user_id: str = ""
    reference_audio: str = ""
    reference_text: str = ""
    speed: float = 1.0
    seed: int = 42
    request_timeout_s: float = 30.0
    connect_timeout_s: float = 5.0
    # A piece of an utterance that fails before any of its audio was heard (busy, timeout,
    # stall, a lost connection) is retried until this long after its first attempt.
    retry_deadline_s: float = 8.0
    # A request with no audio by then is stalled: it is given up and retried elsewhere.
    first_audio_timeout_s: float = 4.0
    # Ask a server that can for 8 kHz mu-law, so the bridge skips resampling.
    request_ulaw: bool = True
    # Extra CA bundle to trust for wss:// / https:// endpoints (a private or self-signed CA).
    ca_file: str = ""
    # Used when no endpoint is set: "auto" (the fastest configured region) or a region id.
    region: str = "auto"
    region_probe_interval_s: float = 600.0
    regions: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # Let users point their endpoint at loopback/private/CGNAT addresses (a laptop, a LAN GPU box).
    # Link-local and cloud metadata addresses stay refused regardless.
    allow_private_endpoints: bool = False
    # Local mode speaks through the TTS server at this URL instead of starting one: what
    # `serve --workers N` tells its workers, so that the one its supervisor runs serves them all.
    local_server_url: str = ""


@dataclasses.dataclass(frozen=True)
class PoolSettings:
    """One warm pool's limits ([pool]): what the pool core decides with and the shell waits by."""

    size: int = 5
    warm: int = 3
    max_age_s: float = 300.0
    health_interval_s: float = 60.0
    acquire_timeout_s: float = 2.0
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0

    @property
    def renew_at_s(self) -> float:
        """Age at which a replacement is opened: ahead of max_age by 10%, at most 30 s."""
        return self.max_age_s - min(30.0, self.max_age_s * 0.1)


@dataclasses.dataclass(frozen=True)
class TwilioSettings:
    account_sid: str = ""
    auth_token: str = dataclasses.field(default="", repr=False)
    # REST API base for hang-ups; empty = Twilio's own (tests point it at a local stand-in).
    api_base_url: str = ""


@dataclasses.dataclass(frozen=True)
class PlivoSettings:
    auth_id: str = ""
    auth_token: str = dataclasses.field(default="", repr=False)
    # Plivo does not document how it signs the WebSocket upgrade: check it only when asked.
    validate_websocket: bool = False
    api_base_url: str = ""


@dataclasses.dataclass(frozen=True)
class CallSettings:
    lead_ms: int = 200
    max_frames_per_message: int = 5
    # Inbound messages a socket read takes once media flows (SO_RCVLOWAT): fewer wake-ups and
    # reads for at most (n - 1) x 20 ms more on what the caller sends; 1 = each at once.
    coalesce_reads: int = 2
    mark_timeout_s: float = 5.0
    # Twilio and Plivo send media every 20 ms for the whole call: a stream silent this long has
    # lost its peer, and the call ends "inactive".
    inactivity_timeout_s: float = 30.0
    # On SIGTERM or SIGINT live calls may go on this long (bridge/web/drain.py); those still
    # live then hear drain_goodbye (empty: none) and end "drained".
    drain_deadline_s: float = 20.0
    drain_goodbye: str = "Sorry, we have to end this call now. Goodbye."


@dataclasses.dataclass(frozen=True)
class AdmissionSettings:
    """Which new calls the bridge takes ([admission]): past its capacity a call gets a busy
    answer instead of being answered into silence."""

    max_calls: int = 0  # live calls per bridge; 0 = no fixed maximum (TTS capacity only)
    # Empty: refuse unanswered (Twilio <Reject reason="busy"/>, Plivo <Hangup reason="busy"/>).
    # Else this is spoken by the carrier, then the call hangs up.
    busy_message: str = ""
    # An admitted call's first words must be able to start within this long.
    first_words_s: float = 3.0


@dataclasses.dataclass(frozen=True)
class AgentSettings:
    # "scripted" (greeting and DTMF replies below), "remote" (a WebSocket agent at remote_url),
    # "llm" (an OpenAI-compatible chat-completions model) or "python:package.module:factory"
    # (an agent in this process).
    kind: str = "scripted"
    remote_url: str = ""
    remote_connect_timeout_s: float = 3.0
    # Sent as the Authorization header of the remote agent's WebSocket upgrade.
    remote_authorization: str = dataclasses.field(default="", repr=False)
    remote_reconnect_attempts: int = 3
    # Said when the agent (remote or llm) cannot be reached or fails to answer in time.
    fallback: str = "Sorry, I am having trouble right now. Please call again later."
    greeting: str = ""
    goodbye: str = "Goodbye!"
    dtmf: Mapping[str, str] = dataclasses.field(default_factory=dict)
    llm_base_url: str = "https://api.openai.com/v1"
    llm_model: str = "gpt-4o-mini"
    llm_api_key: str = dataclasses.field(default="", repr=False)
    llm_system_prompt: str = ("You are a helpful voice assistant on a phone call. Answer in "
                              "short spoken sentences, without lists or markup.")
    llm_temperature: float = 0.7
    llm_max_tokens: int = 400
    llm_first_token_timeout_s: float = 4.0
    llm_request_timeout_s: float = 30.0


@dataclasses.dataclass(frozen=True)
class SttSettings:
    # "none", "pocketsphinx" (offline, English), "openai" (an OpenAI-compatible
    # /audio/transcriptions endpoint, per utterance) or "deepgram" (streaming WebSocket).
    backend: str = "none"
    url: str = ""  # the backend's base URL; empty: its public service
    api_key: str = dataclasses.field(default="", repr=False)
    model: str = ""
    language: str = "en"
    # "voice": any voice activity interrupts the agent; "words": only a transcript of at least
    # barge_in_min_words words does (a cough does not cut the agent off).
    barge_in: str = "voice"
    barge_in_min_words: int = 1
    request_timeout_s: float = 10.0


@dataclasses.dataclass(frozen=True)
class TTSServerSettings:
    host: str = "127.0.0.1"
    port: int = 9000
    base_path: str = "/"
    engine: str = "piper"
    piper_voice: str = ""
    api_key: str = dataclasses.field(default="", repr=False)
    concurrency: int = 2
    max_queue: int = 16
    request_deadline_s: float = 60.0
    max_text_chars: int = 2000
    max_message_bytes: int = 8 * 1024 * 1024
    sim_first_audio_s: float = 0.15
    sim_rtf: float = 0.12
    sim_sample_rate: int = 24000
    sim_cache_dir: str = "data/sim-cache"
    # Voices registered once over WebSocket (register_voice) and named by id afterwards.
    max_voices: int = 32
    # silma engine: local files only (nothing is ever downloaded).
    silma_checkpoint: str = "data/silma/model.pt"
    silma_vocab: str = "data/silma/vocab.txt"
    silma_vocoder: str = "data/silma/vocos-mel-24khz"
    silma_architecture: str = ""
    silma_device: str = "auto"
    silma_dtype: str = "auto"
    silma_steps: int = 16
    silma_cfg_strength: float = 2.0
    silma_sway_coef: float = -1.0
    silma_normalizer_cache_dir: str = "data/silma/normalizer-cache"
    silma_voice_cache_size: int = 64
    silma_max_batch: int = 8
    silma_default_voice: str = ""
    silma_default_voice_text: str = ""
    # What the model is given: silma-tts 1.0.5's rules (engines/silma/frontend.py), but for
    # these deliberate choices. "latency": a short first chunk (upstream: 120 characters).
    silma_chunking: str = "latency"
    # "upstream": each chunk's pause after it (the last too); "between": before the next one.
    silma_pauses: str = "upstream"
    # Arabic diacritization: text2tashkeel (its wheel holds its model), catt (upstream's model,
    # from silma_catt_model_dir: encoder.onnx + decoder.onnx) or off.
    silma_diacritizer: str = "text2tashkeel"
    silma_catt_model_dir: str = ""
    # SILMA's public API v2 at {base}/tts/v2: the model ids it answers, each with the engine
    # that speaks it ("" = the running one); empty = every v2 model, by the running engine.
    v2_models: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # Its predefined voices: <voice_id>.wav + <voice_id>.txt (the transcript), read at start;
    # empty = only "default" (the engine's own voice).
    v2_voices_dir: str = ""
    # v2 requests one socket may have waiting behind the one being spoken; past it: busy.
    v2_max_pending: int = 4


@dataclasses.dataclass(frozen=True)
class FleetSettings:
    """[fleet]: this bridge among others sharing redis_url (unused without it)."""

    # Empty: the host name and process id.
    instance_id: str = ""
    # Where the other bridges reach this one's control API; empty: http://host:port.
    internal_url: str = ""
    region: str = ""
    heartbeat_s: float = 2.0
    # A bridge not heard of for this long is gone: its calls are filed as ended ("bridge lost").
    ttl_s: float = 6.0
    trace_ttl_s: float = 86_400.0
    # With `serve --workers N`: worker i also listens on host:worker_port + i, its own address
    # for requests the fleet forwards to it (its internal URL); 0 = a free port each picks.
    worker_port: int = 0


@dataclasses.dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    # `serve` processes sharing host:port (SO_REUSEPORT), each a fleet member; 1 = this process
    # alone (bridge/workers.py).
    workers: int = 1
    public_url: str = "http://127.0.0.1:8080"
    log_format: str = "console"
    log_level: str = "info"
    # OpenTelemetry: spans per call and utterance go to this OTLP/HTTP endpoint (the [otel] extra).
    otlp_endpoint: str = ""
    # Per-user credentials: sqlite:///... (default, a file) or postgresql://... (scaled out).
    database_url: str = "sqlite+aiosqlite:///data/bridge.db"
    # Fernet key(s) encrypting stored secrets; comma-separated, the first encrypts (rotation).
    secret_key: str = dataclasses.field(default="", repr=False)
    # Access token of the "default" user; empty = generated at first start and printed once when
    # stderr is a terminal (else none is made: `python -m bridge users rotate-token default`).
    default_user_token: str = dataclasses.field(default="", repr=False)
    # Reverse proxies (comma-separated addresses or networks) whose X-Forwarded-For names the
    # client: failed logins are then counted per client, not per proxy.
    trusted_proxies: str = ""
    # A second listener for the ops endpoints (/metrics, /api/pool, /api/health) with no
    # credential: bind it where only the operator's network reaches. 0 = none; the ops
    # endpoints then need an operator's token on the main listener (they do there anyway).
    ops_host: str = "127.0.0.1"
    ops_port: int = 0
    # Answer carrier webhooks that no carrier token can check (no Twilio/Plivo auth token set
    # for the user or the bridge). Only for trying the bridge locally: anyone could then open
    # calls, so it is off unless asked for.
    allow_unsigned_webhooks: bool = False
    # Redis shared by a fleet of bridges (call ownership, routed control, shared traces,
    # settings changes); empty: this bridge alone, as a fleet of one.
    redis_url: str = dataclasses.field(default="", repr=False)
    fleet: FleetSettings = dataclasses.field(default_factory=FleetSettings)
    silma: SilmaSettings = dataclasses.field(default_factory=SilmaSettings)
    pool: PoolSettings = dataclasses.field(default_factory=PoolSettings)
    twilio: TwilioSettings = dataclasses.field(default_factory=TwilioSettings)
    plivo: PlivoSettings = dataclasses.field(default_factory=PlivoSettings)
    call: CallSettings = dataclasses.field(default_factory=CallSettings)
    admission: AdmissionSettings = dataclasses.field(default_factory=AdmissionSettings)
    agent: AgentSettings = dataclasses.field(default_factory=AgentSettings)
    stt: SttSettings = dataclasses.field(default_factory=SttSettings)
    tts_server: TTSServerSettings = dataclasses.field(default_factory=TTSServerSettings)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def _parse(value: str, kind: Any, name: str) -> Any:
    try:
        if kind is bool:
            lowered = value.strip().lower()
            if lowered not in {"1", "0", "true", "false", "yes", "no", "on", "off"}:
                raise ValueError(value)
            return lowered in {"1", "true", "yes", "on"}
        if kind in (int, float, str):
            return kind(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a valid {kind.__name__}") from None
    raise ConfigError(f"{name} cannot be set from the environment")


def _build(cls: type, table: Mapping[str, Any], env: Mapping[str, str], env_name: str) -> Any:
    hints = get_type_hints(cls)
    unknown = set(table) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ConfigError(f"unknown setting(s) {sorted(unknown)} for {cls.__name__}")
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        kind = hints[field.name]
        var = f"{env_name}{field.name.upper()}"
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            values[field.name] = _build(kind, table.get(field.name, {}), env, f"{var}_")
        elif field.name in table and not isinstance(table[field.name], Mapping):
            raw = table[field.name]
            if kind is float and isinstance(raw, int):
                raw = float(raw)
            if kind in (int, float, str, bool) and not isinstance(raw, kind):
                raise ConfigError(f"setting {field.name}={raw!r} must be a {kind.__name__}")
            values[field.name] = raw
        elif field.name in table:
            # Keys of a table can be set one by one: BRIDGE_SILMA_REGIONS_US_EAST=...
            values[field.name] = {
                key: env.get(f"{var}_{key.upper().replace('-', '_')}", value)
                for key, value in table[field.name].items()
            }
        if var in env and kind in (int, float, str, bool):
            values[field.name] = _parse(env[var], kind, var)
    return cls(**values)


def load_settings(
    path: Path | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Read the config file (default bridge/default.toml), then apply BRIDGE_* variables."""
    env = os.environ if env is None else env
    path = Path(env.get("BRIDGE_CONFIG", "")) if path is None and env.get("BRIDGE_CONFIG") else path
    path = path or DEFAULT_CONFIG
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read settings file {path}: {exc}") from exc
    settings: Settings = _build(Settings, table, env, ENV_PREFIX)
    _validate(settings)
    return settings


def _validate(s: Settings) -> None:
    if not s.public_url.startswith(("http://", "https://")):
        raise ConfigError(f"BRIDGE_PUBLIC_URL must be http(s)://, not {s.public_url!r}")
    if not 0 <= s.ops_port <= 65535:
        raise ConfigError("BRIDGE_OPS_PORT must be between 0 and 65535")
    if s.workers < 1:
        raise ConfigError("BRIDGE_WORKERS must be at least 1")
    if not 0 <= s.fleet.worker_port <= 65535:
        raise ConfigError("BRIDGE_FLEET_WORKER_PORT must be between 0 and 65535")
    if s.silma.local_server_url and not s.silma.local_server_url.startswith(
            ("http://", "https://")):
        raise ConfigError("BRIDGE_SILMA_LOCAL_SERVER_URL must be an http(s):// URL")
    if s.log_format not in {"json", "console"}:
        raise ConfigError("BRIDGE_LOG_FORMAT must be 'json' or 'console'")
    _validate_agent(s.agent)
    _validate_stt(s.stt)
    if s.redis_url and not s.redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("BRIDGE_REDIS_URL must be redis://, rediss:// or unix://")
    if not 0 < s.fleet.heartbeat_s < s.fleet.ttl_s:
        raise ConfigError("fleet: need 0 < BRIDGE_FLEET_HEARTBEAT_S < BRIDGE_FLEET_TTL_S")
    if s.silma.api not in {"silma", "v2"}:
        raise ConfigError("BRIDGE_SILMA_API must be silma or v2")
    if s.silma.api == "v2" and s.silma.v2_custom_audio_id and not s.silma.v2_user_id:
        raise ConfigError("BRIDGE_SILMA_V2_CUSTOM_AUDIO_ID needs BRIDGE_SILMA_V2_USER_ID")
    if s.tts_server.silma_chunking not in {"latency", "upstream"}:
        raise ConfigError("BRIDGE_TTS_SERVER_SILMA_CHUNKING must be latency or upstream")
    if s.tts_server.silma_pauses not in {"upstream", "between"}:
        raise ConfigError("BRIDGE_TTS_SERVER_SILMA_PAUSES must be upstream or between")
    if s.tts_server.silma_diacritizer not in {"text2tashkeel", "catt", "off"}:
        raise ConfigError("BRIDGE_TTS_SERVER_SILMA_DIACRITIZER must be text2tashkeel, catt or off")
    if s.tts_server.silma_diacritizer == "catt" and not s.tts_server.silma_catt_model_dir:
        raise ConfigError("silma_diacritizer = catt needs silma_catt_model_dir (its ONNX files)")
    if s.tts_server.engine not in {"piper", "silma", "sim"}:
        raise ConfigError("BRIDGE_TTS_SERVER_ENGINE must be piper, silma or sim")
    if not 20 <= s.call.lead_ms <= 1000:
        raise ConfigError("BRIDGE_CALL_LEAD_MS must be between 20 and 1000")
    if not 1 <= s.call.coalesce_reads <= 4:
        raise ConfigError("BRIDGE_CALL_COALESCE_READS must be between 1 and 4")
    if s.call.max_frames_per_message < 1:
        raise ConfigError("BRIDGE_CALL_MAX_FRAMES_PER_MESSAGE must be at least 1")
    if not 0 < s.call.inactivity_timeout_s <= 3600:
        raise ConfigError("BRIDGE_CALL_INACTIVITY_TIMEOUT_S must be over 0 and at most 3600")
    if not 0 <= s.call.drain_deadline_s <= 3600:
        raise ConfigError("BRIDGE_CALL_DRAIN_DEADLINE_S must be between 0 and 3600")
    if len(s.call.drain_goodbye) > 500:
        raise ConfigError("BRIDGE_CALL_DRAIN_GOODBYE: at most 500 characters")
    if not 0 <= s.pool.warm <= s.pool.size or s.pool.size < 1:
        raise ConfigError("pool: need size >= 1 and 0 <= warm <= size")
    if s.tts_server.concurrency < 1 or s.tts_server.max_queue < 0:
        raise ConfigError("tts_server.concurrency must be >= 1 and max_queue >= 0")
    if not 0 <= s.tts_server.v2_max_pending <= 64:
        raise ConfigError("BRIDGE_TTS_SERVER_V2_MAX_PENDING must be between 0 and 64")
    if s.admission.max_calls < 0 or not 0 < s.admission.first_words_s <= 60:
        raise ConfigError("admission (BRIDGE_ADMISSION_MAX_CALLS, _FIRST_WORDS_S): need "
                          "max_calls >= 0 and 0 < first_words_s <= 60")
    if len(s.admission.busy_message) > 500:
        raise ConfigError("BRIDGE_ADMISSION_BUSY_MESSAGE: at most 500 characters")


def _validate_agent(a: AgentSettings) -> None:
    if a.kind not in AGENT_KINDS and not PYTHON_AGENT.fullmatch(a.kind):
        raise ConfigError(f"BRIDGE_AGENT_KIND must be {', '.join(AGENT_KINDS)} or "
                          f"python:package.module:factory, not {a.kind!r}")
    if a.kind == "remote" and not a.remote_url.startswith(("ws://", "wss://")):
        raise ConfigError("BRIDGE_AGENT_REMOTE_URL must be a ws:// or wss:// URL")
    if not 0 < a.remote_connect_timeout_s <= 60:
        raise ConfigError("BRIDGE_AGENT_REMOTE_CONNECT_TIMEOUT_S must be over 0 and at most 60")
    if not 0 <= a.remote_reconnect_attempts <= 20:
        raise ConfigError("BRIDGE_AGENT_REMOTE_RECONNECT_ATTEMPTS must be between 0 and 20")
    if any(c in a.remote_authorization for c in "\r\n"):
        raise ConfigError("BRIDGE_AGENT_REMOTE_AUTHORIZATION must be one line (a header value)")
    for name, text in (("FALLBACK", a.fallback), ("GREETING", a.greeting),
                       ("GOODBYE", a.goodbye)):
        if len(text) > 2000:
            raise ConfigError(f"BRIDGE_AGENT_{name}: at most 2000 characters")
    if a.kind == "llm":
        if not a.llm_base_url.startswith(("http://", "https://")):
            raise ConfigError("BRIDGE_AGENT_LLM_BASE_URL must be an http(s):// URL")
        if not a.llm_model:
            raise ConfigError("BRIDGE_AGENT_LLM_MODEL must name the model")
    if len(a.llm_system_prompt) > 20_000:
        raise ConfigError("BRIDGE_AGENT_LLM_SYSTEM_PROMPT: at most 20,000 characters")
    if not 0 <= a.llm_temperature <= 2:
        raise ConfigError("BRIDGE_AGENT_LLM_TEMPERATURE must be between 0 and 2")
    if not 1 <= a.llm_max_tokens <= 16_384:
        raise ConfigError("BRIDGE_AGENT_LLM_MAX_TOKENS must be between 1 and 16384")
    if not 0 < a.llm_first_token_timeout_s <= a.llm_request_timeout_s <= 600:
        raise ConfigError("agent: need 0 < BRIDGE_AGENT_LLM_FIRST_TOKEN_TIMEOUT_S <= "
                          "BRIDGE_AGENT_LLM_REQUEST_TIMEOUT_S <= 600")


def _validate_stt(t: SttSettings) -> None:
    if t.backend not in STT_BACKENDS:
        raise ConfigError(f"BRIDGE_STT_BACKEND must be one of {', '.join(STT_BACKENDS)}, "
                          f"not {t.backend!r}")
    schemes = ("ws://", "wss://", "http://", "https://") if t.backend == "deepgram" \
        else ("http://", "https://")
    if t.url and not t.url.startswith(schemes):
        raise ConfigError(f"BRIDGE_STT_URL must start with {' or '.join(schemes)} "
                          f"for stt.backend = {t.backend}")
    if t.barge_in not in {"voice", "words"}:
        raise ConfigError("BRIDGE_STT_BARGE_IN must be voice or words")
    if t.barge_in == "words" and t.backend == "none":
        raise ConfigError("BRIDGE_STT_BARGE_IN = words needs a BRIDGE_STT_BACKEND (the words "
                          "come from speech to text)")
    if not 1 <= t.barge_in_min_words <= 20:
        raise ConfigError("BRIDGE_STT_BARGE_IN_MIN_WORDS must be between 1 and 20")
    if not 0 < t.request_timeout_s <= 120:
        raise ConfigError("BRIDGE_STT_REQUEST_TIMEOUT_S must be over 0 and at most 120")
    if not re.fullmatch(r"[A-Za-z0-9-]{1,16}", t.language):
        raise ConfigError("BRIDGE_STT_LANGUAGE must be a language code such as en or en-US")
    if len(t.model) > 128:
        raise ConfigError("BRIDGE_STT_MODEL: at most 128 characters")
