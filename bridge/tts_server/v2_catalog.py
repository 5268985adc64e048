"""What our server's v2 API serves: its models (each with the language of its pronunciation
hints) and its predefined voices.

Built once at start from the settings (`build_catalog`); a bad table entry or voice file is a
ConfigError naming it, so a server never starts half-configured. The predefined voices are a
folder of `<voice_id>.wav` (the clip) + `<voice_id>.txt` (its transcript); other files there
are ignored. `default` is the engine's own voice (no clip) and cannot be a file.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from bridge.errors import AudioFormatError, ConfigError
from bridge.settings import TTSServerSettings
from bridge.silma import v2_protocol as v2
from bridge.tts_server.pronunciation import Language
from bridge.tts_server.voices import MAX_VOICE_S, StoredVoice, decode_clip

# The language each SILMA v2 model speaks: Najdi is Arabic too.
LANGUAGES: Mapping[str, Language] = {
    "silma-tts-v2-english": "en",
    "silma-tts-v2-msa": "ar",
    "silma-tts-v2-ksa": "ar",
}
DEFAULT_VOICE_ID = "default"
# Bounds on what the voices folder may make the server hold in memory.
MAX_VOICES = 64
MAX_CLIP_BYTES = 8 * 1024 * 1024  # 30 s of 48 kHz stereo 16-bit WAV is 5.5 MiB
MAX_TRANSCRIPT_CHARS = 1000
VOICE_ID = re.compile(r"[a-z0-9][a-z0-9_\-]{0,63}")
_TABLE = "tts_server.v2_models (BRIDGE_TTS_SERVER_V2_MODELS_*)"
_FOLDER = "BRIDGE_TTS_SERVER_V2_VOICES_DIR"


@dataclasses.dataclass(frozen=True)
class V2Catalog:
    models: Mapping[str, Language]  # served model id -> the language of its hints
    voices: Mapping[str, StoredVoice]  # predefined voice id -> its clip and transcript

    def language(self, model_id: str) -> Language:
        """The language a served model speaks; V2RequestError unknown_model otherwise."""
        try:
            return self.models[model_id]
        except KeyError:
            raise v2.V2RequestError(f"model_id {model_id!r} is not served here (served: "
                                    f"{', '.join(sorted(self.models))})",
                                    "unknown_model") from None

    def voice(self, voice_id: str) -> StoredVoice | None:
        """A predefined voice, None for the engine's own; V2RequestError unknown_voice."""
        if voice_id == DEFAULT_VOICE_ID:
            return None
        try:
            return self.voices[voice_id]
        except KeyError:
            raise v2.V2RequestError(f"voice_id {voice_id!r} is not a voice of this server",
                                    "unknown_voice") from None


def build_catalog(settings: TTSServerSettings, engine_name: str) -> V2Catalog:
    return V2Catalog(served_models(settings.v2_models, engine_name),
                     load_voices(settings.v2_voices_dir))


def served_models(table: Mapping[str, str], engine_name: str) -> dict[str, Language]:
    """The table's models and their languages; an empty table serves every v2 model. Each must
    be a SILMA v2 model id spoken by the running engine ("" names it): a server runs one."""
    served: dict[str, Language] = {}
    for model_id, engine in (table or dict.fromkeys(v2.MODELS, "")).items():
        if model_id not in LANGUAGES:
            raise ConfigError(f"{_TABLE}: {model_id!r} is not a SILMA v2 model id (one of "
                              f"{', '.join(v2.MODELS)})")
        if engine not in ("", engine_name):
            raise ConfigError(f"{_TABLE}: {model_id} is to be spoken by {engine!r}, but this "
                              f"server runs the {engine_name} engine (\"\" = the running one)")
        served[model_id] = LANGUAGES[model_id]
    return served


def voice_ids(names: Iterable[str]) -> list[str]:
    """The voices a folder holding these file names defines, checked: every clip has its
    transcript and the other way round, ids are plain, `default` is not one, and there are
    at most MAX_VOICES. Files of other kinds are not voices."""
    clips = {name.removesuffix(".wav") for name in names if name.endswith(".wav")}
    texts = {name.removesuffix(".txt") for name in names if name.endswith(".txt")}
    for voice_id in sorted(clips ^ texts):
        missing = f"{voice_id}.txt" if voice_id in clips else f"{voice_id}.wav"
        raise ConfigError(f"{_FOLDER}: {missing} is missing (a voice is a .wav and its .txt)")
    for voice_id in sorted(clips):
        if voice_id == DEFAULT_VOICE_ID:
            raise ConfigError(f"{_FOLDER}: {voice_id}.wav: 'default' is the engine's own "
                              "voice, not a file")
        if not VOICE_ID.fullmatch(voice_id):
            raise ConfigError(f"{_FOLDER}: {voice_id}.wav: a voice id is 1-64 of a-z, 0-9, "
                              "'_' and '-', starting with a letter or digit")
    if len(clips) > MAX_VOICES:
        raise ConfigError(f"{_FOLDER}: {len(clips)} voices, over the limit of {MAX_VOICES}")
    return sorted(clips)


def load_voices(folder: str) -> dict[str, StoredVoice]:
    """Read and check every voice of the folder ('' = none)."""
    if not folder:
        return {}
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"{_FOLDER}: {root} is not a folder")
    names = [path.name for path in root.iterdir() if path.is_file()]
    return {voice_id: _load_voice(root, voice_id) for voice_id in voice_ids(names)}


def _load_voice(root: Path, voice_id: str) -> StoredVoice:
    clip, transcript = root / f"{voice_id}.wav", root / f"{voice_id}.txt"
    try:
        size = clip.stat().st_size
        if size > MAX_CLIP_BYTES:
            raise ConfigError(f"{_FOLDER}: {clip} is {size} bytes, over the limit of "
                              f"{MAX_CLIP_BYTES}")
        audio, rate = decode_clip(clip.read_bytes())
        text = transcript.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{_FOLDER}: cannot read voice {voice_id!r}: {exc}") from exc
    except AudioFormatError as exc:
        raise ConfigError(f"{_FOLDER}: {clip}: {exc}") from exc
    if audio.size > MAX_VOICE_S * rate:
        raise ConfigError(f"{_FOLDER}: {clip} lasts {audio.size / rate:.1f} s, over the limit "
                          f"of {MAX_VOICE_S:g} s")
    if not text or len(text) > MAX_TRANSCRIPT_CHARS:
        raise ConfigError(f"{_FOLDER}: {transcript} must hold the clip's transcript "
                          f"(1-{MAX_TRANSCRIPT_CHARS} characters)")
    return StoredVoice(audio, rate, text)
