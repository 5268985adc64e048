"""`python -m bridge serve --workers N`: every core of a machine. A supervisor starts N worker
processes; each is a whole bridge (`serve --worker-index i`) listening on the same host:port
with SO_REUSEPORT, so the kernel spreads the carriers' connections over them, and each is its
own member of the fleet on the shared Redis. A stream that lands on another worker than its
webhook is served as across two bridges today: the stream token is checked with the shared
BRIDGE_SECRET_KEY, control requests for a call are forwarded to the worker holding it, and the
calls list and traces are the fleet's. The decisions are workers_core's; this is the shell.

Each worker also listens on a port of its own (BRIDGE_FLEET_WORKER_PORT + i, else a free one),
which is its internal URL in the fleet: a request forwarded to the shared port would reach a
random worker. Its ops listener, when there is one, is BRIDGE_OPS_PORT + i: Prometheus scrapes
each worker's own numbers. Every response of a worker carries X-Bridge-Worker: i.

What the supervisor owns, so that it is not multiplied by N: the store's first opening
(migrations, the default user and the printed token, the SQLite secret.key, whose key every
worker is then given so that stream tokens and page sessions are good on all of them), and the
local TTS server when the settings need local mode (one child for all workers, kept as
local_server.py keeps it). SIGTERM or SIGINT to the supervisor goes to every worker, which
drains as a lone bridge does (web/drain.py; a second and third signal are forwarded too); the
supervisor exits when all have, with the worst exit status, and kills a worker still running
past the longest drain. A worker that dies unasked is started again after a capped backoff,
logged with its reason: the calls it held are lost (the other workers file them "bridge lost"
once its fleet record expires), the others go on. Workers run in a session of their own, so a
terminal's Ctrl-C reaches them once, through the supervisor; a worker whose supervisor is gone
(even by kill -9) sees its stdin pipe close and drains.

Why subprocesses of `python -m bridge serve` and not multiprocessing: a fresh interpreter per
worker, as the spawn start method gives, never forks a running event loop, its threads or its
open sockets; and it is the very entry point `serve` runs, configured the way `serve` always is
(config file and BRIDGE_* variables, with a few set per worker), so a worker is nothing but a
bridge.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import os
import signal
import socket
import sys
from collections.abc import Callable

import structlog
from aiohttp import web

from bridge import workers_core as core
from bridge.errors import ConfigError, TTSUnavailable
from bridge.settings import Settings
from bridge.supervisor import Supervisor

log = structlog.get_logger("bridge.workers")

READY_LINE = b"bridge-worker-ready"  # a worker's stdout, once it listens and is a fleet member
WORKER_HEADER = "X-Bridge-Worker"
READY_TIMEOUT_S = 120.0  # start to ready: store, fleet, the default pool warming
OUTPUT_DRAIN_S = 2.0  # a dead worker's last output, unless a grandchild holds its pipe open
LOCAL_RETRY_S = 10.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
MAX_LINE = 64 * 1024


def whole_lines() -> None:
    """Each line to stderr in one write. Workers and their supervisor share that stream, and
    unbuffered (PYTHONUNBUFFERED, usual in containers) Python writes a line's text and its
    newline apart: another process's line could land between them, corrupting both."""
    if isinstance(sys.stderr, io.TextIOWrapper):
        sys.stderr.reconfigure(line_buffering=True, write_through=False)


# -- in the worker ------------------------------------------------------------------------------
@dataclasses.dataclass
class WorkerRole:
    """What makes `serve --worker-index i` a worker: its own bound socket (the fleet's way to
    this worker and no other), the shared port taken with SO_REUSEPORT, its header, its
    ready line and the supervisor's lifeline."""

    index: int
    internal: socket.socket

    @classmethod
    def bind(cls, settings: Settings, index: int) -> tuple[WorkerRole, Settings]:
        """Bind the worker's own port and return the settings with its internal URL on it
        (the fleet record is written before the listeners start, so the port comes first)."""
        port = core.internal_port(settings, index)
        try:
            sock = _bound_socket(settings.host, port)
        except OSError as exc:
            raise ConfigError(f"worker {index} cannot listen on {settings.host}:{port} (its "
                              f"own port, BRIDGE_FLEET_WORKER_PORT + {index}): {exc}") from exc
        bound = int(sock.getsockname()[1])
        fleet = dataclasses.replace(settings.fleet,
                                    internal_url=core.internal_url(settings, bound))
        return cls(index, sock), settings.replace(fleet=fleet)

    def mark(self, app: web.Application) -> None:
        """Every response says which worker answered (operators, tests)."""
        value = str(self.index)

        async def mark(_request: web.Request, response: web.StreamResponse) -> None:
            response.headers[WORKER_HEADER] = value

        app.on_response_prepare.append(mark)

    async def listen(self, runner: web.AppRunner, settings: Settings) -> None:
        try:
            await web.TCPSite(runner, settings.host, settings.port, reuse_port=True).start()
        except OSError as exc:
            raise ConfigError(f"worker {self.index} cannot listen on "
                              f"{settings.host}:{settings.port}: {exc}") from exc
        await web.SockSite(runner, self.internal).start()

    def announce(self, settings: Settings) -> None:
        log.info("worker_listening", worker=self.index, instance=settings.fleet.instance_id,
                 internal_url=settings.fleet.internal_url, ops_port=settings.ops_port or None)
        sys.stdout.buffer.write(READY_LINE + b"\n")
        sys.stdout.flush()

    def watch_lifeline(self, on_lost: Callable[[], None]) -> None:
        """The supervisor holds the other end of this worker's stdin: end of file means it is
        gone (killed, even with -9). Drain as at SIGTERM: no worker outlives its supervisor."""
        loop = asyncio.get_running_loop()
        fd = sys.stdin.fileno()
        os.set_blocking(fd, False)

        def readable() -> None:
            try:
                data = os.read(fd, 4096)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                loop.remove_reader(fd)
                log.warning("supervisor_gone", worker=self.index)
                on_lost()

        loop.add_reader(fd, readable)

    def close(self) -> None:
        self.internal.close()


def _bound_socket(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (SO_REUSEADDR, as aiohttp's listeners), not listening."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


# -- in the supervisor --------------------------------------------------------------------------
async def supervise(settings: Settings, workers: int) -> int:
    """Run `workers` workers until they have all exited after a signal; the exit status."""
    from bridge.web.app import AppConfig

    core.check(settings, workers)
    AppConfig.check(settings)  # what every worker would refuse, refused once, before any starts
    _check_ports_free(settings, workers)
    env, local_needed = await _prepare(settings)
    async with contextlib.AsyncExitStack() as stack:
        if local_needed:
            local = SharedLocalTTS()
            await local.start()
            stack.push_async_callback(local.stop)  # after the workers: their goodbyes need it
            env["BRIDGE_SILMA_LOCAL_SERVER_URL"] = local.url
        return await Workers(settings, workers, env).run()


def _check_ports_free(settings: Settings, workers: int) -> None:
    """SO_REUSEPORT would let the workers share the port with another bridge's workers still
    on it, silently taking half its calls: the port must be free now (bound without the
    option; SO_REUSEADDR as aiohttp sets it, so connections in TIME_WAIT do not count). The
    workers' fixed ports too, so that a taken one is named here rather than by a worker."""
    wanted = [(settings.host, settings.port, "BRIDGE_PORT")]
    for index in range(workers):
        p = core.plan(settings, "", index, 0)
        if p.ops_port:
            wanted.append((settings.ops_host, p.ops_port, f"BRIDGE_OPS_PORT + {index}"))
        if p.internal_port:
            wanted.append((settings.host, p.internal_port,
                           f"BRIDGE_FLEET_WORKER_PORT + {index}"))
    for host, port, name in wanted:
        try:
            _bound_socket(host, port).close()
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port} ({name}): {exc}") from exc


async def _prepare(settings: Settings) -> tuple[dict[str, str], bool]:
    """Open the store once before any worker does (migrations, the default user and its
    token, SQLite's secret.key: never N at once); the settings every worker then shares, and
    whether some user's calls speak in local mode."""
    from bridge.store import DEFAULT_USER_ID, Store
    from bridge.store.crypto import key_from_file
    from bridge.store.db import async_url, sqlite_file

    store = await Store.open(settings.database_url, settings.secret_key,
                             default_user_token=settings.default_user_token)
    try:
        rows = [await store.silma(DEFAULT_USER_ID), *await store.silma_users()]
    finally:
        await store.close()
    env: dict[str, str] = {}
    if not settings.secret_key:
        # SQLite's key file (PostgreSQL refuses to open without BRIDGE_SECRET_KEY): each worker
        # would read it too, but would make its own stream-token and session keys without it.
        path = sqlite_file(async_url(settings.database_url))
        if path is not None:
            env["BRIDGE_SECRET_KEY"] = key_from_file(path.parent / "secret.key")[0]
    return env, core.needs_local_tts(settings.silma, rows)


class SharedLocalTTS:
    """The local TTS server all workers speak through: local_server.py's supervised child,
    and a fresh one on the same port if it was given up on after repeated failures."""

    def __init__(self) -> None:
        from bridge.silma.local_server import LocalTTSServer

        self._server = LocalTTSServer()
        self._keeper: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return self._server.url

    async def start(self) -> None:
        await self._server.start()
        log.info("local_tts_server_shared", url=self.url)
        self._keeper = asyncio.create_task(self._keep(), name="local-tts-keeper")

    async def _keep(self) -> None:
        from bridge.silma.local_server import LocalTTSServer

        try:
            while True:
                restarts = int(self._server.stats()["restarts"])
                try:
                    await self._server.wait_restarted(restarts + 1, timeout_s=3600.0)
                    continue
                except TimeoutError:
                    continue
                except TTSUnavailable as exc:
                    log.error("local_tts_server_given_up", url=self.url, reason=str(exc))
                old = self._server
                await old.stop()
                fresh = LocalTTSServer(port=old.port)
                try:
                    await fresh.start()
                except TTSUnavailable as exc:
                    log.error("local_tts_server_start_failed", url=old.url, reason=str(exc),
                              retry_in_s=LOCAL_RETRY_S)
                    await asyncio.sleep(LOCAL_RETRY_S)  # a pause between attempts
                    continue
                self._server = fresh
                if fresh.url != old.url:
                    # Someone took the port meanwhile: the workers still point at the old one.
                    log.error("local_tts_server_moved", old=old.url, new=fresh.url,
                              hint="restart the bridge")
        except Exception:  # the task root: logged, never lost
            log.exception("local_tts_keeper_failed", url=self.url)

    async def stop(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        await self._server.stop()


class Workers:
    """The supervisor's shell: starts, watches, signals and restarts the worker processes."""

    def __init__(self, settings: Settings, count: int, env: dict[str, str]) -> None:
        self._settings = settings
        self._count = count
        self._env = env
        self._core = core.WorkersCore(count)
        self._base = core.instance_base(settings, socket.gethostname(), os.getpid())
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._stopped = asyncio.Event()  # set at the first signal (or a failed first start)
        self._tasks = Supervisor(self._task_failed)
        self._failed = False  # a keeper task itself failed
        self._signals = 0
        self._announced = False

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self._signalled, sig)
        try:
            keepers = [self._tasks.spawn(f"worker-{i}", self._keep(i))
                       for i in range(self._count)]
            await asyncio.wait(keepers)
            await self._reap()
        finally:
            for sig in STOP_SIGNALS:
                loop.remove_signal_handler(sig)
            await self._tasks.aclose()
            for proc in self._procs.values():
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        status = max(self._core.exit_status(), 1 if self._failed else 0)
        log.info("workers_stopped", status=status,
                 deaths=sum(slot.deaths for slot in self._core.slots))
        return status

    # -- one worker across its incarnations -------------------------------------------------
    async def _keep(self, index: int) -> None:
        loop = asyncio.get_running_loop()
        while not self._core.stopping:
            plan = core.plan(self._settings, self._base, index, self._core.started(index))
            returncode = await self._run_once(plan)
            decision = self._core.exited(index, loop.time(), returncode)
            if isinstance(decision, core.Exited):
                log.info("worker_exited", worker=index, instance=plan.instance_id,
                         status=decision.status)
                return
            if isinstance(decision, core.GiveUp):
                log.error("worker_start_failed", worker=index, instance=plan.instance_id,
                          reason=decision.reason, status=decision.status)
                self._stop(signal.SIGTERM)
                return
            log.error("worker_died", worker=index, instance=plan.instance_id,
                      reason=decision.reason, restart_in_s=round(decision.delay_s, 2),
                      lost="the calls it held (the other workers file them 'bridge lost')")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(decision.at):
                    await self._stopped.wait()

    async def _run_once(self, plan: core.WorkerPlan) -> int:
        """One incarnation, from its start to its exit: its return code."""
        env = {**os.environ, **self._env, **plan.environment(self._settings)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "serve", "--worker-index", str(plan.index),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env,
            start_new_session=True)
        self._procs[plan.index] = proc
        log.info("worker_started", worker=plan.index, instance=plan.instance_id, pid=proc.pid)
        if self._core.stopping:  # the stop came while it was being created
            _send(proc, signal.SIGTERM)
        ready = asyncio.Event()
        output = asyncio.create_task(_pass_output(proc, ready, plan.index),
                                     name=f"worker-{plan.index}-out")
        exit_ = asyncio.create_task(proc.wait(), name=f"worker-{plan.index}-wait")
        ready_ = asyncio.create_task(ready.wait(), name=f"worker-{plan.index}-ready")
        try:
            await asyncio.wait([exit_, ready_], timeout=READY_TIMEOUT_S,
                               return_when=asyncio.FIRST_COMPLETED)
            if ready.is_set() and proc.returncode is None:
                self._ready(plan)
            elif proc.returncode is None:
                log.error("worker_not_ready", worker=plan.index, instance=plan.instance_id,
                          timeout_s=READY_TIMEOUT_S)
                proc.kill()
            return await exit_
        finally:
            if proc.stdin is not None:
                proc.stdin.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(OUTPUT_DRAIN_S):
                    await asyncio.shield(output)
            for task in (output, exit_, ready_):
                task.cancel()

    def _ready(self, plan: core.WorkerPlan) -> None:
        self._core.ready(plan.index, asyncio.get_running_loop().time())
        if plan.generation:
            log.info("worker_restarted", worker=plan.index, instance=plan.instance_id,
                     generation=plan.generation)
        if self._core.all_ready_once and not self._announced:
            self._announced = True
            s = self._settings
            print(f"bridge listening on http://{s.host}:{s.port} (settings page: "
                  f"http://{s.host}:{s.port}/settings), {self._count} workers",
                  file=sys.stderr, flush=True)

    # -- stopping ---------------------------------------------------------------------------
    def _signalled(self, sig: signal.Signals) -> None:
        """SIGTERM or SIGINT (a loop signal handler): every signal goes to every worker, which
        drains at the first and hurries at the next, as a lone bridge does."""
        self._signals += 1
        log.info("workers_signalled", signal=sig.name, count=self._signals,
                 running=sum(1 for proc in self._procs.values() if proc.returncode is None))
        if not self._core.stopping:
            self._stop(sig)
        else:
            for proc in self._procs.values():
                _send(proc, sig)

    def _stop(self, sig: signal.Signals) -> None:
        """The first stop: signal the workers the core names, wake the ones waiting to restart,
        and kill whatever still runs past the longest drain."""
        for index in self._core.stop():
            if (proc := self._procs.get(index)) is not None:
                _send(proc, sig)
        if not self._stopped.is_set():
            self._stopped.set()
            self._tasks.spawn("workers-stop-bound", self._kill_after(
                core.stop_bound_s(self._settings)))

    async def _kill_after(self, bound_s: float) -> None:
        await asyncio.sleep(bound_s)  # the bound itself: a deadline, not a wait for a state
        for index, proc in self._procs.items():
            if proc.returncode is None:
                log.error("worker_killed", worker=index, pid=proc.pid,
                          reason=f"still running {bound_s:.0f} s after the stop")
                _send(proc, signal.SIGKILL)

    async def _reap(self) -> None:
        """Processes left by a keeper that failed: each gets the stop bound, then is killed."""
        left = [proc for proc in self._procs.values() if proc.returncode is None]
        if left:
            self._stop(signal.SIGTERM)
            await asyncio.gather(*(proc.wait() for proc in left))

    def _task_failed(self, name: str, exc: BaseException) -> None:
        if name != "workers-stop-bound":  # the stop first: a log that fails must not lose it
            self._failed = True
            if not self._core.stopping:
                self._stop(signal.SIGTERM)
        log.error("workers_task_failed", task=name, error=f"{type(exc).__name__}: {exc}"[:300])


def _send(proc: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)


async def _pass_output(proc: asyncio.subprocess.Process, ready: asyncio.Event,
                       index: int) -> None:
    """A worker's stdout: its ready line noted, anything else passed on as it comes."""
    assert proc.stdout is not None
    out = sys.stdout.buffer
    pending = b""
    try:
        while chunk := await proc.stdout.read(MAX_LINE):
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                if line.rstrip(b"\r") == READY_LINE:
                    ready.set()
                else:
                    out.write(line + b"\n")
            if len(pending) >= MAX_LINE:  # no line this long is ours: pass it on as it is
                out.write(pending)
                pending = b""
            out.flush()
        if pending:
            out.write(pending)
            out.flush()
    except OSError as exc:  # our own stdout gone (a closed pipe): the worker goes on
        log.warning("worker_output_lost", worker=index, error=str(exc)[:200])
