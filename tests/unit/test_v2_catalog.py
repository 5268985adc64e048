"""What the v2 API serves: the model table and the predefined voices folder, checked at start."""

from pathlib import Path

import numpy as np
import pytest

from bridge.audio.codec import encode_audio
from bridge.errors import ConfigError
from bridge.silma import v2_protocol as v2
from bridge.tts_server.v2_catalog import (
    LANGUAGES,
    MAX_CLIP_BYTES,
    MAX_VOICES,
    V2Catalog,
    load_voices,
    served_models,
    voice_ids,
)
from bridge.tts_server.voices import StoredVoice

CLIP = encode_audio(np.full(1600, 0.1, dtype=np.float32), 16000, "wav")


def test_every_v2_model_has_a_language():
    assert set(LANGUAGES) == set(v2.MODELS)
    assert LANGUAGES["silma-tts-v2-english"] == "en"
    assert LANGUAGES["silma-tts-v2-ksa"] == LANGUAGES["silma-tts-v2-msa"] == "ar"


def test_an_empty_table_serves_every_model_with_the_running_engine():
    assert served_models({}, "piper") == dict(LANGUAGES)


def test_a_table_serves_only_its_models():
    table = {"silma-tts-v2-english": "", "silma-tts-v2-ksa": "silma"}
    assert served_models(table, "silma") == {"silma-tts-v2-english": "en",
                                             "silma-tts-v2-ksa": "ar"}


@pytest.mark.parametrize(("table", "needle"), [
    ({"silma-tts-v3": ""}, "'silma-tts-v3' is not a SILMA v2 model id"),
    ({"silma-tts-v2-msa": "sim"}, "to be spoken by 'sim', but this server runs the piper"),
])
def test_a_bad_table_is_a_config_error_naming_it(table, needle):
    with pytest.raises(ConfigError, match=needle) as raised:
        served_models(table, "piper")
    assert "BRIDGE_TTS_SERVER_V2_MODELS" in str(raised.value)


def test_the_catalog_answers_unknown_model_and_unknown_voice():
    anna = StoredVoice(np.zeros(10, dtype=np.float32), 16000, "Hi.")
    catalog = V2Catalog({"silma-tts-v2-msa": "ar"}, {"anna": anna})
    assert catalog.language("silma-tts-v2-msa") == "ar"
    assert catalog.voice("anna") is anna
    assert catalog.voice("default") is None
    with pytest.raises(v2.V2RequestError) as model:
        catalog.language("silma-tts-v2-english")
    with pytest.raises(v2.V2RequestError) as voice:
        catalog.voice("bob")
    assert (model.value.code, voice.value.code) == ("unknown_model", "unknown_voice")


def test_voice_ids_pair_clips_with_transcripts_and_ignore_other_files():
    assert voice_ids(["b.wav", "b.txt", "a-1.wav", "a-1.txt", "README.md"]) == ["a-1", "b"]
    assert voice_ids([]) == []


@pytest.mark.parametrize(("names", "needle"), [
    (["anna.wav"], "anna.txt is missing"),
    (["anna.txt"], "anna.wav is missing"),
    (["default.wav", "default.txt"], "'default' is the engine's own voice"),
    (["Anna Lee.wav", "Anna Lee.txt"], "Anna Lee.wav: a voice id is"),
    ([f"v{n}.{kind}" for n in range(MAX_VOICES + 1) for kind in ("wav", "txt")],
     "over the limit of 64"),
])
def test_voice_ids_refuse_a_broken_folder(names, needle):
    with pytest.raises(ConfigError, match=needle):
        voice_ids(names)


def test_voices_load_from_the_folder(tmp_path: Path):
    (tmp_path / "anna.wav").write_bytes(CLIP)
    (tmp_path / "anna.txt").write_text(" Hello, I am Anna.\n", encoding="utf-8")
    (anna_id, anna), = load_voices(str(tmp_path)).items()
    assert (anna_id, anna.rate, anna.text, anna.audio.size) == ("anna", 16000,
                                                                "Hello, I am Anna.", 1600)
    assert load_voices("") == {}


@pytest.mark.parametrize(("clip", "text", "needle"), [
    (b"not a wav at all", b"Hi.", r"anna\.wav: audio does not decode"),
    (b"RIFF\x00\x00\x00\x00WAVEjunk", b"Hi.", r"anna\.wav: audio is not a WAV"),
    (encode_audio(np.full(31 * 8000, 0.1, dtype=np.float32), 8000, "wav"), b"Hi.",
     "lasts 31.0 s"),
    (b"\0" * (MAX_CLIP_BYTES + 4), b"Hi.", "over the limit of"),
    (CLIP, b"\xff\xfe not utf-8 \xff", "cannot read voice 'anna'"),
    (CLIP, b"x" * 1001, "must hold the clip's transcript"),
])
def test_a_broken_voice_file_is_a_config_error_naming_it(tmp_path: Path, clip, text, needle):
    (tmp_path / "anna.wav").write_bytes(clip)
    (tmp_path / "anna.txt").write_bytes(text)
    with pytest.raises(ConfigError, match=needle):
        load_voices(str(tmp_path))


def test_a_voices_folder_that_is_not_there_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"BRIDGE_TTS_SERVER_V2_VOICES_DIR: .* is not a folder"):
        load_voices(str(tmp_path / "nowhere"))
