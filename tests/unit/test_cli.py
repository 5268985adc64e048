"""The command line (`silma-bridge`, `python -m bridge`): its version, the defaults its help
shows, and the call emulator's options and caller audio."""

from __future__ import annotations

import importlib.metadata
import os
import socket
import wave
from pathlib import Path

import numpy as np
import pytest

from bridge.__main__ import main
from bridge.audio.mulaw import ulaw2lin
from bridge.emulator import cli
from bridge.errors import AudioFormatError
from bridge.settings import load_settings


@pytest.fixture(autouse=True)
def no_bridge_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The settings the command line reads are the defaults unless a test sets a variable."""
    for name in [n for n in os.environ if n.startswith("BRIDGE_")]:
        monkeypatch.delenv(name)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: --help, --version, a bad option
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, " ".join(out.split()), err  # help's lines joined: wrapping is the terminal's


def test_version_is_the_package_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--version"], capsys)
    assert code == 0
    assert out.strip() == f"silma-bridge {importlib.metadata.version('silma-bridge')}"


def test_help_describes_the_bridge_and_lists_its_commands(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--help"], capsys)
    assert code == 0
    assert "SILMA telephony media bridge" in out
    for command in ("serve", "tts-server", "call", "users"):
        assert command in out


def test_serve_help_shows_the_defaults_the_settings_give(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    _, out, _ = run(["serve", "--help"], capsys)
    assert "(default 127.0.0.1: BRIDGE_HOST" in out
    assert "(default 8080: BRIDGE_PORT" in out
    assert "(default 1: BRIDGE_WORKERS" in out
    monkeypatch.setenv("BRIDGE_PORT", "8123")
    _, out, _ = run(["serve", "--help"], capsys)
    assert "(default 8123: BRIDGE_PORT" in out  # what a run would use, not a fixed 8080


def test_tts_server_help_shows_its_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(["tts-server", "--help"], capsys)
    settings = load_settings(env={}).tts_server
    assert f"(default {settings.port}: BRIDGE_TTS_SERVER_PORT" in out
    assert f"(default {settings.engine}: BRIDGE_TTS_SERVER_ENGINE" in out


def test_help_and_version_work_on_broken_settings_which_a_run_reports(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_PORT", "eighty")
    assert run(["serve", "--help"], capsys)[0] == 0
    assert run(["--version"], capsys)[0] == 0
    code, _, err = run(["serve"], capsys)
    assert code == 2 and "BRIDGE_PORT" in err


@pytest.mark.parametrize("argv", [["serve", "--port", "0"], ["serve", "--port", "70000"],
                                  ["serve", "--port", "http"],
                                  ["serve", "--workers", "0"], ["tts-server", "--port", "-1"]])
def test_out_of_range_options_are_refused_before_anything_starts(
        argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(argv, capsys)
    assert code == 2 and "error: argument" in err


def test_call_help_shows_its_options_and_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["call", "--help"], capsys)
    assert code == 0
    assert "--dtmf KEYS" in out and "--duration SECONDS" in out
    assert "(default: twilio)" in out and "(default: 30.0)" in out
    assert "(default: None)" not in out  # an option with no default says nothing of one


@pytest.mark.parametrize("keys", ["1", "12*#", "0987654321"])
def test_dtmf_keys_are_a_phones_keys(keys: str) -> None:
    assert cli.build_parser().parse_args(["--dtmf", keys]).dtmf == keys


def test_no_keys_unless_asked() -> None:
    assert cli.build_parser().parse_args([]).dtmf is None


@pytest.mark.parametrize("keys, shown", [("12x", "got x"), ("a", "got a"), ("", "got nothing"),
                                         ("1 2", "got  ")])
def test_other_dtmf_keys_are_refused_by_name(
        keys: str, shown: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["call", "--dtmf", keys], capsys)
    assert code == 2
    assert "keys are 0-9, * and #" in err and shown in err


@pytest.mark.parametrize("seconds", ["0", "-3", "nan", "soon"])
def test_duration_must_be_a_positive_number(
        seconds: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["call", "--duration", seconds], capsys)
    assert code == 2 and "above 0" in err


def test_call_url_defaults_to_where_the_settings_have_the_bridge_listen(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("BRIDGE_PORT", str(port))
    code, _, err = run(["call", "--timeout", "5"], capsys)
    assert code == 1
    assert f"127.0.0.1:{port}" in err


@pytest.mark.parametrize("host, url", [("0.0.0.0", "http://127.0.0.1:8080"),
                                       ("::", "http://127.0.0.1:8080"),
                                       ("::1", "http://[::1]:8080"),
                                       ("10.1.2.3", "http://10.1.2.3:8080")])
def test_local_bridge_url(host: str, url: str) -> None:
    assert cli.local_bridge_url(load_settings(env={"BRIDGE_HOST": host})) == url


TONE_HZ = 440.0


def write_wav(path: Path, rate: int, channels: int, seconds: float = 1.0) -> Path:
    """A 440 Hz tone at half scale: in the first channel, the others silent."""
    t = np.arange(round(rate * seconds)) / rate
    frames = np.zeros((len(t), channels), dtype="<i2")
    frames[:, 0] = np.round(16000 * np.sin(2 * np.pi * TONE_HZ * t))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(frames.tobytes())
    return path


@pytest.mark.parametrize("rate, channels", [(8000, 1), (16000, 1), (22050, 1), (44100, 2),
                                            (48000, 2), (11025, 1)])
def test_caller_wav_at_any_common_rate_becomes_the_phone_lines_8_khz(
        tmp_path: Path, rate: int, channels: int) -> None:
    mulaw = cli.read_caller_wav(write_wav(tmp_path / "caller.wav", rate, channels))
    assert abs(len(mulaw) - 8000) <= 2  # one second at 8 kHz, one byte a sample
    pcm = ulaw2lin(mulaw).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(pcm))
    assert np.fft.rfftfreq(len(pcm), 1 / 8000)[spectrum.argmax()] == pytest.approx(TONE_HZ, abs=2)
    # Stereo is mixed down: the tone in one channel of two comes out at half its level.
    level = np.sqrt(np.mean(pcm[400:-400] ** 2))
    assert level == pytest.approx(16000 / np.sqrt(2) / channels, rel=0.05)


def test_a_wav_that_is_not_16_bit_is_refused_with_what_it_is(tmp_path: Path) -> None:
    path = tmp_path / "eight-bit.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(1)
        out.setframerate(8000)
        out.writeframes(b"\x80" * 800)
    with pytest.raises(AudioFormatError, match="need 16-bit PCM samples, got 8-bit"):
        cli.read_caller_wav(path)


def test_a_file_that_is_no_wav_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "caller.wav"
    path.write_bytes(b"ID3 not a wav")
    with pytest.raises(AudioFormatError, match=r"cannot read .* as a WAV file"):
        cli.read_caller_wav(path)
