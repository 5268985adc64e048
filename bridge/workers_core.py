"""What `python -m bridge serve --workers N` decides, with no I/O (bridge/workers.py is the
shell: it starts the processes, waits for them and sleeps the delays given here).

- Whether N workers can run on these settings at all (`check`): they share one fleet registry,
  so Redis is required; one fixed port, shared with SO_REUSEPORT; one store that every process
  reaches (not an in-memory SQLite database); port ranges that do not collide.
- What each worker is told (`plan`): its fleet id (`<base>-w<i>`, `r<n>` added after each
  restart, so a dead incarnation's calls are filed as lost by the others instead of being
  taken over by a namesake), its ops port (ops_port + i: each worker's own metrics stay
  reachable), its internal port (fleet.worker_port + i, or a free one) and URL.
- When a worker that exited is started again (`WorkersCore`): never while stopping; a worker
  whose first start fails takes the whole supervisor down (a bad setting, a port in use: every
  worker would fail the same); otherwise after an exponential, jittered delay, capped, that
  starts over once a worker has run for `stable_s`. There is no give-up: the other workers go
  on serving, and each death is logged with its reason and the delay.
- The supervisor's exit status: the worst of its workers' final ones.
"""

from __future__ import annotations

import dataclasses
import enum
import random
import urllib.parse
from collections.abc import Callable, Iterable

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from bridge.errors import ConfigError
from bridge.settings import Settings, SilmaSettings
from bridge.silma import protocol as p
from bridge.silma.regions import RegionChoice
from bridge.silma.target_core import Local, resolve
from bridge.store.models import SilmaCredentials
from bridge.web.drain_core import CLOSE_S

MAX_WORKERS = 256
LISTENER_SHUTDOWN_S = 5.0  # web.AppRunner(shutdown_timeout=5.0) in bridge/__main__.py
STOP_MARGIN_S = 10.0  # services closing after the listener, the interpreter's exit


def check(settings: Settings, workers: int) -> None:
    """ConfigError unless `workers` processes can serve these settings together."""
    if not 1 <= workers <= MAX_WORKERS:
        raise ConfigError(f"--workers / BRIDGE_WORKERS must be between 1 and {MAX_WORKERS}")
    if workers == 1:
        return
    if not settings.redis_url:
        raise ConfigError(
            f"{workers} workers need BRIDGE_REDIS_URL: each worker is a fleet member, and a "
            "call's stream, control requests and trace reach whichever worker the kernel "
            "picks only through the shared registry")
    if settings.port == 0:
        raise ConfigError("several workers share one port (SO_REUSEPORT): set BRIDGE_PORT "
                          "(or --port) to a fixed port, not 0")
    if _in_memory_sqlite(settings.database_url):
        raise ConfigError("several workers need one store: an in-memory SQLite database would "
                          "be one per worker; use a SQLite file or PostgreSQL")
    taken = {settings.port: "BRIDGE_PORT"}
    for name, base in (("BRIDGE_OPS_PORT", settings.ops_port),
                       ("BRIDGE_FLEET_WORKER_PORT", settings.fleet.worker_port)):
        if not base:
            continue
        if base + workers - 1 > 65535:
            raise ConfigError(f"{name} + workers - 1 = {base + workers - 1}: past 65535")
        for port in range(base, base + workers):
            if port in taken:
                raise ConfigError(f"{name} {base}..{base + workers - 1} (one port a worker) "
                                  f"overlaps {taken[port]} ({port})")
            taken[port] = name


def _in_memory_sqlite(database_url: str) -> bool:
    try:
        url = make_url(database_url)
    except ArgumentError:
        return False  # not a URL: the store says so, naming the setting
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


@dataclasses.dataclass(frozen=True)
class WorkerPlan:
    """What worker `index`'s incarnation `generation` is told."""

    index: int
    generation: int
    instance_id: str
    ops_port: int  # 0: no ops listener
    internal_port: int  # 0: a free one, picked by the worker

    def environment(self, settings: Settings) -> dict[str, str]:
        """The settings it gets on top of the supervisor's environment."""
        return {"BRIDGE_HOST": settings.host, "BRIDGE_PORT": str(settings.port),
                "BRIDGE_OPS_PORT": str(self.ops_port),
                "BRIDGE_FLEET_INSTANCE_ID": self.instance_id}


def instance_base(settings: Settings, hostname: str, pid: int) -> str:
    """What the workers' fleet ids start with: the configured id, else host and supervisor."""
    return settings.fleet.instance_id or f"{hostname}-{pid}"


def plan(settings: Settings, base: str, index: int, generation: int) -> WorkerPlan:
    suffix = f"-w{index}" + (f"r{generation}" if generation else "")
    return WorkerPlan(index=index, generation=generation, instance_id=base + suffix,
                      ops_port=settings.ops_port + index if settings.ops_port else 0,
                      internal_port=internal_port(settings, index))


def internal_port(settings: Settings, index: int) -> int:
    return settings.fleet.worker_port + index if settings.fleet.worker_port else 0


def internal_url(settings: Settings, port: int) -> str:
    """Where the fleet reaches this worker and no other: BRIDGE_FLEET_INTERNAL_URL with the
    worker's own port, else http://host:port."""
    if settings.fleet.internal_url:
        parts = urllib.parse.urlsplit(settings.fleet.internal_url)
        host = parts.hostname or settings.host
        host = f"[{host}]" if ":" in host else host
        return urllib.parse.urlunsplit(parts._replace(netloc=f"{host}:{port}")).rstrip("/")
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return f"http://{host}:{port}"


def needs_local_tts(silma: SilmaSettings, rows: Iterable[SilmaCredentials | None]) -> bool:
    """Whether a call of any of these rows (None: a user with no row) speaks in local mode on
    these settings, so the supervisor must run the one local TTS server for all workers. The
    decision is target_core's own (before any region is measured: `auto` resolves to the first
    configured region then, never to local mode)."""
    regions = RegionChoice({} if silma.endpoint else {r: u for r, u in silma.regions.items()
                                                       if u})
    voice = p.SynthesizeRequest(text="")
    return any(isinstance(resolve(row, silma, voice, regions), Local) for row in rows)


def exit_status(returncode: int) -> int:
    """A process's return code as a shell reports it: 128 + N for a death by signal N."""
    return 128 - returncode if returncode < 0 else returncode


def stop_bound_s(settings: Settings) -> float:
    """How long a worker may take from the supervisor's first signal to its exit: its drain at
    the longest (drain_core: deadline, goodbye, three bounded closes), its listener's shutdown,
    a margin. Past it the supervisor kills it."""
    call = settings.call
    return (call.drain_deadline_s + call.mark_timeout_s + 3 * CLOSE_S + LISTENER_SHUTDOWN_S
            + STOP_MARGIN_S)


def describe_exit(returncode: int) -> str:
    return f"killed by signal {-returncode}" if returncode < 0 else \
        f"exited with code {returncode}"


# -- restarts -----------------------------------------------------------------------------------
class SlotState(enum.Enum):
    STARTING = "starting"  # started, not ready yet
    RUNNING = "running"  # ready: listening and a fleet member
    WAITING = "waiting"  # exited; a restart is due at retry_at
    EXITED = "exited"  # for good (stopping, or the supervisor gave up)


@dataclasses.dataclass(frozen=True)
class RestartPolicy:
    base_s: float = 0.5
    max_s: float = 30.0
    stable_s: float = 60.0  # a worker that ran this long before dying: a one-off, not a loop


@dataclasses.dataclass(frozen=True, slots=True)
class Restart:
    """Start the worker again at `at` (after `delay_s`)."""

    at: float
    delay_s: float
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class GiveUp:
    """The worker's first start failed: stop every worker, exit with `status`."""

    status: int
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class Exited:
    """Stopping: this worker is done, with `status`."""

    status: int


Decision = Restart | GiveUp | Exited


@dataclasses.dataclass
class Slot:
    """Worker `index` across its incarnations."""

    index: int
    state: SlotState = SlotState.STARTING
    generation: int = -1  # incarnations started - 1
    ever_ready: bool = False
    ready_at: float | None = None
    failures_in_a_row: int = 0
    deaths: int = 0  # exits not asked for
    retry_at: float | None = None
    status: int = 0  # the last incarnation's exit status


class WorkersCore:
    def __init__(self, count: int, policy: RestartPolicy = RestartPolicy(), *,
                 rng: Callable[[], float] = random.random) -> None:
        if count < 1:
            raise ValueError("need at least one worker")
        self.policy = policy
        self._rng = rng
        self.slots = [Slot(i) for i in range(count)]
        self.stopping = False
        self.gave_up: str | None = None  # why, when a first start failed

    def started(self, index: int) -> int:
        """A new incarnation of worker `index` is starting; its generation."""
        slot = self.slots[index]
        if self.stopping:
            raise RuntimeError("no worker starts while stopping")
        slot.state = SlotState.STARTING
        slot.generation += 1
        slot.retry_at = None
        return slot.generation

    def ready(self, index: int, now: float) -> None:
        slot = self.slots[index]
        if slot.state is SlotState.STARTING:
            slot.state = SlotState.RUNNING
            slot.ever_ready = True
            slot.ready_at = now

    @property
    def all_ready_once(self) -> bool:
        return all(slot.ever_ready for slot in self.slots)

    def exited(self, index: int, now: float, returncode: int) -> Decision:
        """Worker `index`'s process exited with `returncode`: what now."""
        slot = self.slots[index]
        status = exit_status(returncode)
        slot.status = status
        reason = describe_exit(returncode)
        if self.stopping:
            slot.state = SlotState.EXITED
            return Exited(status)
        slot.deaths += 1
        if not slot.ever_ready:
            # The first start failed: a bad setting or a port in use, which every worker
            # would meet again. Say so at once rather than retry in a loop.
            slot.status = status or 1
            slot.state = SlotState.EXITED
            self.gave_up = f"worker {index} failed to start: {reason}"
            self.stop()
            return GiveUp(slot.status, self.gave_up)
        if slot.state is SlotState.RUNNING and slot.ready_at is not None \
                and now - slot.ready_at >= self.policy.stable_s:
            slot.failures_in_a_row = 0
        slot.failures_in_a_row += 1
        delay = min(self.policy.max_s,
                    self.policy.base_s * 2 ** (slot.failures_in_a_row - 1))
        delay *= 0.5 + self._rng() / 2  # jitter: 50-100% of the delay
        slot.state = SlotState.WAITING
        slot.retry_at = now + delay
        return Restart(slot.retry_at, delay, reason)

    def stop(self) -> list[int]:
        """Stop asked for (a signal, or a failed first start): the workers to signal. One
        waiting for its restart is done, with the status it died with."""
        self.stopping = True
        signal: list[int] = []
        for slot in self.slots:
            if slot.state in (SlotState.STARTING, SlotState.RUNNING):
                signal.append(slot.index)
            elif slot.state is SlotState.WAITING:
                slot.state = SlotState.EXITED
                slot.retry_at = None
        return signal

    @property
    def all_exited(self) -> bool:
        return all(slot.state is SlotState.EXITED for slot in self.slots)

    def exit_status(self) -> int:
        """The supervisor's: the worst of its workers' final statuses."""
        return max(slot.status for slot in self.slots)
