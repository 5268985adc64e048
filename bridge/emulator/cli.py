"""`python -m bridge call`: place one emulated Twilio or Plivo call on a running bridge."""

import argparse
import asyncio
import os
import sys
import warnings
import wave
from pathlib import Path

import numpy as np
import soxr

from bridge.emulator.runner import run_call
from bridge.errors import AudioFormatError, BridgeError

# The stdlib module warns on import in 3.11-3.12; from 3.13 the audioop-lts package provides it.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop


def read_caller_wav(path: Path) -> bytes:
    """An 8 or 16 kHz mono 16-bit WAV as 8 kHz mu-law, what a provider sends from a phone."""
    try:
        with wave.open(str(path), "rb") as wav:
            channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            pcm = wav.readframes(wav.getnframes())
    except (OSError, EOFError, wave.Error) as exc:
        raise AudioFormatError(f"cannot read {path} as a WAV file: {exc}") from exc
    if channels != 1 or width != 2 or rate not in (8000, 16000):
        raise AudioFormatError(
            f"{path}: need mono 16-bit PCM at 8 or 16 kHz, got {channels} channel(s), "
            f"{8 * width}-bit, {rate} Hz"
        )
    if rate == 16000:
        samples = np.frombuffer(pcm, dtype="<i2")
        pcm = soxr.resample(samples, 16000, 8000, quality="HQ").astype("<i2").tobytes()
    return audioop.lin2ulaw(pcm, 2)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bridge call",
        description="Call a running bridge the way Twilio or Plivo would and report what the "
        "caller got.",
    )
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="the bridge's base URL")
    parser.add_argument(
        "--provider", choices=("twilio", "plivo"), default="twilio", help="whose call to emulate"
    )
    parser.add_argument(
        "--say",
        action="extend",
        nargs="+",
        default=[],
        metavar="TEXT",
        help="after the greeting, have the bridge say each TEXT in turn",
    )
    parser.add_argument(
        "--audio", type=Path, help="the caller's voice: mono 16-bit WAV at 8 or 16 kHz"
    )
    parser.add_argument("--record", type=Path, help="save what the caller heard to this WAV")
    parser.add_argument(
        "--auth-token-env",
        metavar="NAME",
        help="sign requests with the provider's auth token held in environment variable NAME",
    )
    parser.add_argument(
        "--control-token-env",
        metavar="NAME",
        default="BRIDGE_DEFAULT_USER_TOKEN",
        help="for --say: the call owner's access token, held in environment variable NAME "
        "(default BRIDGE_DEFAULT_USER_TOKEN)",
    )
    parser.add_argument(
        "--user-path", default="", help="appended to /twilio/voice or /plivo/answer"
    )
    parser.add_argument(
        "--greetings",
        type=int,
        default=1,
        metavar="N",
        help="utterances the bridge speaks unprompted when the call starts (default 1)",
    )
    parser.add_argument(
        "--connect-url",
        help="open the media stream here instead of the answer's URL (bridge behind a proxy)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--timeout", type=float, default=30.0, metavar="S", help="give up after S seconds"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    auth_token = None
    if args.auth_token_env:
        auth_token = os.environ.get(args.auth_token_env)
        if not auth_token:
            print(f"error: environment variable {args.auth_token_env} is not set", file=sys.stderr)
            return 1
    try:
        caller_audio = read_caller_wav(args.audio) if args.audio else None
        report = asyncio.run(
            run_call(
                args.url,
                provider=args.provider,
                say=args.say,
                caller_audio=caller_audio,
                record_path=args.record,
                auth_token=auth_token,
                user_path=args.user_path,
                max_seconds=args.timeout,
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
    return 0 if report.ok else 1
