"""`python -m bridge call`: place one emulated Twilio or Plivo call on a running bridge."""

import argparse
import asyncio
import os
import sys
import wave
from pathlib import Path

import numpy as np

from bridge.audio.mulaw import lin2ulaw
from bridge.audio.resample import StreamResampler, float_to_pcm16, pcm16_to_float
from bridge.emulator.call import DTMF_DIGITS
from bridge.emulator.playout import BYTES_PER_SECOND
from bridge.emulator.runner import KEY_REPLY_WAIT_S, run_call
from bridge.errors import AudioFormatError, BridgeError
from bridge.settings import Settings, load_settings

# Wildcard listen addresses: the bridge is reached on loopback then.
_ANY_ADDRESS = {"", "0.0.0.0", "::"}


def read_caller_wav(path: Path) -> bytes:
    """A 16-bit PCM WAV at any rate, mono or stereo (mixed down), as 8 kHz mu-law: what a
    provider sends from a phone."""
    try:
        with wave.open(str(path), "rb") as wav:
            channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            pcm = wav.readframes(wav.getnframes())
    except (OSError, EOFError, wave.Error) as exc:
        raise AudioFormatError(f"cannot read {path} as a WAV file: {exc}") from exc
    if width != 2:
        raise AudioFormatError(
            f"{path}: need 16-bit PCM samples, got {8 * width}-bit (convert it, e.g. "
            f"`sox in.wav -b 16 out.wav`)"
        )
    frames = np.frombuffer(pcm, dtype="<i2")
    frames = frames[: len(frames) - len(frames) % channels].reshape(-1, channels)
    mono = pcm16_to_float(frames).mean(axis=1, dtype=np.float32)
    resampler = StreamResampler(rate, BYTES_PER_SECOND)
    samples = np.concatenate([resampler.process(mono), resampler.flush()])
    return lin2ulaw(float_to_pcm16(samples))


def dtmf_keys(text: str) -> str:
    """--dtmf's value: the keys a phone has, in the order pressed."""
    if not text or (wrong := set(text) - DTMF_DIGITS):
        shown = "nothing" if not text else ", ".join(sorted(wrong))
        raise argparse.ArgumentTypeError(f"keys are 0-9, * and #; got {shown}")
    return text


def positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0:  # NaN too
        raise argparse.ArgumentTypeError(f"need a number of seconds above 0, got {text!r}")
    return seconds


def local_bridge_url(settings: Settings) -> str:
    """Where the bridge that `settings` configure listens, as reached from this machine."""
    host = "127.0.0.1" if settings.host in _ANY_ADDRESS else settings.host
    return f"http://{f'[{host}]' if ':' in host else host}:{settings.port}"


class _DefaultsShown(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's default in its help, where it has one: not for an option that is off or
    empty unless given (argparse would show "None", "False" or "[]")."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, "", [], False):
            return action.help
        return super()._get_help_string(action)


def build_parser(prog: str = "python -m bridge call") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        formatter_class=_DefaultsShown,
        description="Call a running bridge the way Twilio or Plivo would and report what the "
        "caller got: each utterance's latency, what was played out, protocol violations. Exits "
        "non-zero when the call failed or no audio arrived.",
    )
    parser.add_argument(
        "--url",
        help="the bridge's base URL (default: where this machine's bridge listens by its "
        "settings, BRIDGE_HOST and BRIDGE_PORT: http://127.0.0.1:8080 unless changed)",
    )
    parser.add_argument(
        "--provider", choices=("twilio", "plivo"), default="twilio", help="whose call to emulate"
    )
    parser.add_argument(
        "--say",
        action="extend",
        nargs="+",
        default=[],
        metavar="TEXT",
        help="after the greeting (and the keys), have the bridge say each TEXT in turn",
    )
    parser.add_argument(
        "--dtmf",
        type=dtmf_keys,
        metavar="KEYS",
        help="after the greeting, press each of KEYS (0-9, *, #) in turn, as the carrier's dtmf "
        f"events; the agent's reply to each is heard out (a key it does not answer within "
        f"{KEY_REPLY_WAIT_S:g} s has none)",
    )
    parser.add_argument(
        "--duration",
        type=positive_seconds,
        metavar="SECONDS",
        help="hang up SECONDS after the call connected, wherever the script is, and not before "
        "(default: once the script has played out)",
    )
    parser.add_argument(
        "--audio",
        type=Path,
        metavar="WAV",
        help="the caller's voice: a 16-bit PCM WAV, mono or stereo, at any rate (8, 16, "
        "22.05, 44.1, 48 kHz...), resampled to the phone line's 8 kHz",
    )
    parser.add_argument(
        "--record", type=Path, metavar="WAV", help="save what the caller heard to this WAV file"
    )
    parser.add_argument(
        "--auth-token-env",
        metavar="NAME",
        help="sign requests with the provider's auth token held in environment variable NAME",
    )
    parser.add_argument(
        "--control-token-env",
        metavar="NAME",
        default="BRIDGE_DEFAULT_USER_TOKEN",
        help="for --say: the call owner's access token, held in environment variable NAME",
    )
    parser.add_argument(
        "--user-path", default="", help="appended to /twilio/voice or /plivo/answer"
    )
    parser.add_argument(
        "--greetings",
        type=int,
        default=1,
        metavar="N",
        help="utterances the bridge speaks unprompted when the call starts",
    )
    parser.add_argument(
        "--connect-url",
        help="open the media stream here instead of the answer's URL (bridge behind a proxy)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=30.0,
        metavar="S",
        help="give up after S seconds (with --duration: on setting the call up)",
    )
    return parser


def main(argv: list[str] | None = None, prog: str = "python -m bridge call") -> int:
    args = build_parser(prog).parse_args(argv)
    auth_token = None
    if args.auth_token_env:
        auth_token = os.environ.get(args.auth_token_env)
        if not auth_token:
            print(f"error: environment variable {args.auth_token_env} is not set", file=sys.stderr)
            return 1
    try:
        url = args.url or local_bridge_url(load_settings())
        caller_audio = read_caller_wav(args.audio) if args.audio else None
        report = asyncio.run(
            run_call(
                url,
                provider=args.provider,
                say=args.say,
                dtmf=args.dtmf or "",
                caller_audio=caller_audio,
                record_path=args.record,
                auth_token=auth_token,
                user_path=args.user_path,
                # With --duration the call's length bounds the script; --timeout its set-up.
                max_seconds=None if args.duration else args.timeout,
                duration_s=args.duration,
                setup_seconds=args.timeout,
                wait_marks=args.greetings,
                connect_url=args.connect_url,
                control_token=os.environ.get(args.control_token_env) or None,
            )
        )
    except BridgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the recording could not be written
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 1
    print(report.to_json() if args.json else report.summary())
    if args.record:
        print(f"recording saved to {args.record}", file=sys.stderr)
    if not report.bytes_received:
        print(f"error: no audio arrived from the bridge at {url}: the call was answered, but "
              f"nothing was spoken on it (the bridge's log says why, e.g. its TTS server "
              f"unreachable)", file=sys.stderr)
        return 1
    return 0 if report.ok else 1
