"""Command line: `silma-bridge` (or `python -m bridge`) `serve | tts-server | call | users`."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import importlib.metadata
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

from bridge.errors import BridgeError
from bridge.settings import Settings, load_settings
from bridge.tracing.logs import configure_logging

if TYPE_CHECKING:
    from bridge.web.app import AppConfig
    from bridge.web.context import BridgeContext
    from bridge.web.services import Services
    from bridge.workers import WorkerRole


def _run(main: object) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)  # type: ignore[arg-type]
    else:
        return uvloop.run(main)  # type: ignore[arg-type]


async def _until_drained(ctx: BridgeContext, worker: WorkerRole | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then drain the calls (bridge/web/drain.py); a signal
    during the drain hurries it. A worker also drains when its supervisor is gone."""
    from bridge.web.drain import Drainer

    drainer = Drainer(ctx)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, drainer.signalled)
    if worker is not None:
        worker.watch_lifeline(drainer.signalled)
        worker.announce(ctx.settings)  # ready once a signal drains it: never before
    await drainer.run()


GC_PAUSE_WARN_S = 0.02
FULL_COLLECTION_THRESHOLD = 1000  # CPython's default is 10


def _watch_gc_pauses() -> None:
    """Log every collection long enough to starve calls' audio (the sender's lead is ~100 ms)."""
    import structlog

    log = structlog.get_logger("bridge.gc")
    started: list[float] = [0.0]

    def watch(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        elif (pause := time.perf_counter() - started[0]) > GC_PAUSE_WARN_S:
            log.warning("gc_pause", ms=round(pause * 1000, 1), generation=info["generation"],
                        collected=info["collected"])

    gc.callbacks.append(watch)


async def _serve(settings: Settings) -> None:
    from bridge.web.app import AppConfig
    from bridge.web.services import open_services

    config = AppConfig.check(settings)  # a bad setting fails here, before anything opens
    # The services before the listeners, so no request finds them missing; they close after.
    async with open_services(settings) as services:
        await _listen(settings, services, config)


async def _serve_worker(settings: Settings, index: int) -> None:
    """Worker `index` of `serve --workers N` (bridge/workers.py): a whole bridge, on the shared
    port and on one of its own, which is its address in the fleet."""
    from bridge.web.app import AppConfig
    from bridge.web.services import open_services
    from bridge.workers import WorkerRole

    config = AppConfig.check(settings)
    worker, settings = WorkerRole.bind(settings, index)
    try:
        async with open_services(settings) as services:
            await _listen(settings, services, config, worker)
    finally:
        worker.close()


async def _listen(settings: Settings, services: Services, config: AppConfig,
                  worker: WorkerRole | None = None) -> None:
    from aiohttp import web

    from bridge.web.access_log import StructlogAccessLogger
    from bridge.web.app import create_app, create_ops_app
    from bridge.web.context import CONTEXT

    app = create_app(services, config)
    if worker is not None:
        worker.mark(app)
    runner = web.AppRunner(app, shutdown_timeout=5.0, access_log_class=StructlogAccessLogger)
    runners = [runner]
    try:
        await runner.setup()
        if worker is None:
            await web.TCPSite(runner, settings.host, settings.port).start()
        else:
            await worker.listen(runner, settings)
        if settings.ops_port:
            # The ops endpoints without a credential: a listener of their own, so the operator
            # can keep it off the network that carriers and tenants reach.
            ops_app = create_ops_app(app[CONTEXT])
            if worker is not None:
                worker.mark(ops_app)
            ops = web.AppRunner(ops_app, access_log=None)
            runners.insert(0, ops)
            await ops.setup()
            await web.TCPSite(ops, settings.ops_host, settings.ops_port).start()
        # The ~100k objects of imports and start-up never die: move them out of the collector's
        # reach, or each full collection stalls every call's audio for ~100 ms.
        gc.collect()
        gc.freeze()
        # Full collections still scan every live call's objects (~60 ms at 200 calls): make
        # them 100x rarer; the young generations, cheap and where cycles die, run as before.
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, FULL_COLLECTION_THRESHOLD)
        _watch_gc_pauses()
        if worker is None:
            print(f"bridge listening on http://{settings.host}:{settings.port} "
                  f"(settings page: http://{settings.host}:{settings.port}/settings)",
                  file=sys.stderr, flush=True)
        await _until_drained(app[CONTEXT], worker)  # a worker says it is ready there
    finally:
        for each in runners:  # ops first, then the main app (it closes what the drain left)
            await each.cleanup()


def _version() -> str:
    try:
        return importlib.metadata.version("silma-bridge")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree never installed
        return "unknown (not installed)"


def _prog() -> str:
    """How the user started us, for usage lines: `python -m bridge` or the console command."""
    return "python -m bridge" if sys.argv[0].endswith("__main__.py") else "silma-bridge"


def build_parser(settings: Settings | None) -> argparse.ArgumentParser:
    """The command line. Option defaults are the values `settings` hold, so --help shows what
    a run would use; None (the settings did not load): the built-in defaults are shown, so that
    --help and --version still work, and main() reports the error after parsing."""
    shown = settings or Settings()
    helpful = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(
        prog=_prog(), formatter_class=helpful,
        description="SILMA telephony media bridge: Twilio and Plivo calls spoken by SILMA TTS. "
                    "Settings come from bridge/default.toml (or BRIDGE_CONFIG) and BRIDGE_* "
                    "environment variables; options given here override them.")
    parser.add_argument("--version", action="version", version=f"silma-bridge {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve", formatter_class=helpful,
        help="run the bridge (and a local TTS server if no SILMA endpoint is set)",
        description="Run the bridge: carrier webhooks, media streams, control API, settings "
                    "page. With no SILMA endpoint configured it also starts the local TTS "
                    "server. SIGTERM drains the live calls before exiting.")
    serve.add_argument("--host", default=shown.host,
                       help=_setting("address to listen on", "BRIDGE_HOST"))
    serve.add_argument("--port", type=_port, default=shown.port,
                       help=_setting("port to listen on", "BRIDGE_PORT"))
    serve.add_argument("--workers", type=_positive, default=shown.workers,
                       help=_setting("processes sharing the port (more than 1 needs "
                                     "BRIDGE_REDIS_URL)", "BRIDGE_WORKERS"))
    serve.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)  # the supervisor's
    tts = commands.add_parser(
        "tts-server", formatter_class=helpful, help="run the SILMA TTS API server",
        description="Run the SILMA TTS API server on its own (WebSocket, HTTP and SILMA's "
                    "public API v2).")
    tts.add_argument("--host", default=shown.tts_server.host,
                     help=_setting("address to listen on", "BRIDGE_TTS_SERVER_HOST"))
    tts.add_argument("--port", type=_port, default=shown.tts_server.port,
                     help=_setting("port to listen on", "BRIDGE_TTS_SERVER_PORT"))
    tts.add_argument("--engine", choices=("piper", "silma", "sim"),
                     default=shown.tts_server.engine,
                     help=_setting("piper: offline on the CPU; silma: the SILMA model (a GPU, "
                                   "the [silma] extra); sim: a timing stand-in for load tests",
                                   "BRIDGE_TTS_SERVER_ENGINE"))
    # Parsed by bridge/emulator/cli.py (main() hands it the rest of the line); listed here for
    # the command list and `--help`.
    commands.add_parser("call", help="emulate a Twilio or Plivo call toward a running bridge",
                        add_help=False)
    from bridge import users_cli

    users_cli.add_arguments(commands.add_parser("users", help="manage users and access tokens"))
    return parser


def _setting(what: str, variable: str) -> str:
    """An option's help: what it sets, and where its default comes from."""
    return f"{what} (default %(default)s: {variable} or the settings file)"


def _port(text: str) -> int:
    return _whole(text, 1, 65535, "a port (1-65535)")


def _positive(text: str) -> int:
    return _whole(text, 1, None, "a whole number of at least 1")


def _whole(text: str, low: int, high: int | None, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if value < low or (high is not None and value > high):
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
    return value


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["call"]:
        from bridge.emulator.cli import main as call_main

        return call_main(argv[1:], prog=f"{_prog()} call")
    try:
        settings: Settings | None = load_settings()
    except BridgeError as exc:
        settings, problem = None, exc
    args = build_parser(settings).parse_args(argv)
    if settings is None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        configure_logging(settings.log_format, settings.log_level)
        if args.command == "users":
            from bridge import users_cli

            return users_cli.main(args, settings)
        if args.command == "serve":
            settings = settings.replace(host=args.host, port=args.port)
            workers = args.workers
            if args.worker_index is not None:
                import structlog

                from bridge.workers import whole_lines

                whole_lines()
                structlog.contextvars.bind_contextvars(worker=args.worker_index)
                _run(_serve_worker(settings, args.worker_index))
            elif workers == 1:
                _run(_serve(settings))
            else:
                from bridge.workers import supervise, whole_lines

                whole_lines()
                return int(_run(supervise(settings, workers)))
        else:
            from bridge.tts_server.app import run

            run(dataclasses.replace(settings.tts_server, host=args.host, port=args.port,
                                    engine=args.engine))
    except BridgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
