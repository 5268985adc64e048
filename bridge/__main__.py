"""Command line: `python -m bridge serve | tts-server | call`."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import signal
import sys

from bridge.errors import BridgeError
from bridge.settings import Settings, load_settings
from bridge.tracing.logs import configure_logging


def _run(main: object) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)  # type: ignore[arg-type]
    else:
        uvloop.run(main)  # type: ignore[arg-type]


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _serve(settings: Settings) -> None:
    from aiohttp import web

    from bridge.web.app import create_app

    runner = web.AppRunner(create_app(settings), shutdown_timeout=5.0)
    try:
        await runner.setup()
        await web.TCPSite(runner, settings.host, settings.port).start()
        # The ~100k objects of imports and start-up never die: move them out of the collector's
        # reach, or each full collection stalls every call's audio for ~100 ms.
        gc.collect()
        gc.freeze()
        print(f"bridge listening on http://{settings.host}:{settings.port} "
              f"(settings page: http://{settings.host}:{settings.port}/settings)",
              file=sys.stderr, flush=True)
        await _until_signalled()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridge")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the bridge (and a local TTS server if needed)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    tts = commands.add_parser("tts-server", help="run the SILMA TTS API server")
    tts.add_argument("--host")
    tts.add_argument("--port", type=int)
    tts.add_argument("--engine", choices=("piper", "silma", "sim"))
    commands.add_parser("call", help="emulate a Twilio call toward a bridge", add_help=False)

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["call"]:
        from bridge.emulator.cli import main as call_main

        return call_main(argv[1:])
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        configure_logging(settings.log_format, settings.log_level)
        if args.command == "serve":
            settings = settings.replace(host=args.host or settings.host,
                                        port=args.port or settings.port)
            _run(_serve(settings))
        else:
            from bridge.tts_server.app import run

            overrides = {k: v for k in ("host", "port", "engine")
                         if (v := getattr(args, k)) is not None}
            run(dataclasses.replace(settings.tts_server, **overrides))
    except BridgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
