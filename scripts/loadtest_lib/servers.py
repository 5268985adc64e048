"""The processes under test: the TTS server (the sim engine's, or the pre-rendered stand-in)
and one bridge, each pinned to its own cores, started on loopback with their stderr in files,
stopped with SIGTERM (then SIGKILL)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parents[2]
_STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    # Released before the child binds it: a tiny race, acceptable for a script on loopback.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _clean_env() -> dict[str, str]:
    """Our environment without BRIDGE_* variables: the test sets every one it means."""
    return {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path
    _log: IO[bytes] = field(repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_healthy(self, path: str, timeout_s: float) -> None:
        """Poll GET `path` until it answers 200; RuntimeError (with the log's tail) if the
        process exits or the time runs out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.tail()}")
            try:
                with urllib.request.urlopen(self.url + path, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not healthy within {timeout_s:.0f} s: {self.tail()}")

    def tail(self, chars: int = 2000) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def start_child(
    name: str,
    args: list[str],
    env: dict[str, str],
    cpus: set[int] | None,
    log_path: Path,
    url: str,
    nice: int = 0,
    src: Path = REPO,
    module: str = "bridge",
) -> Child:
    """`python -m MODULE ARGS` (the bridge by default) with `env` on top of a BRIDGE_*-free
    environment, on `cpus`, at scheduling priority `nice` (the caller checked it may set it).
    `src`: the source tree whose `bridge` runs (another checkout: an older commit measured
    side by side)."""
    log = log_path.open("wb")

    def pin() -> None:  # in the child before exec: every thread it ever starts inherits this
        if cpus:
            os.sched_setaffinity(0, cpus)
        if nice:
            os.setpriority(os.PRIO_PROCESS, 0, nice)

    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=src,
        env={**_clean_env(), **env},
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=pin,  # safe: the script starts its children before any thread
    )
    return Child(name, proc, url, log_path, log)


def start_tts(
    run_dir: Path,
    cpus: set[int] | None,
    *,
    first_audio_s: float,
    rtf: float,
    engine: str,
    nice: int = 0,
    port: int | None = None,
) -> Child:
    """The TTS server with a GPU-like latency model and room for every request at once, so
    it never answers busy and the load test measures the bridge. `port`: a given one (a
    server started again where the bridge expects it), else a free one."""
    port = port or free_port()
    env = {
        "BRIDGE_TTS_SERVER_HOST": "127.0.0.1",
        "BRIDGE_TTS_SERVER_PORT": str(port),
        "BRIDGE_TTS_SERVER_ENGINE": engine,
        "BRIDGE_TTS_SERVER_SIM_FIRST_AUDIO_S": str(first_audio_s),
        "BRIDGE_TTS_SERVER_SIM_RTF": str(rtf),
        # The GPU host's resampling is not what is measured, and would load the generator's core.
        "BRIDGE_TTS_SERVER_SIM_SAMPLE_RATE": "8000",
        "BRIDGE_TTS_SERVER_CONCURRENCY": "10000",
        "BRIDGE_TTS_SERVER_MAX_QUEUE": "10000",
        # Kept across runs: the first start renders the sim's speech with Piper (seconds).
        "BRIDGE_TTS_SERVER_SIM_CACHE_DIR": str(REPO / "data" / "sim-cache"),
        "BRIDGE_LOG_LEVEL": "warning",
        "BRIDGE_LOG_FORMAT": "json",
    }
    return start_child(
        "tts-server",
        ["tts-server"],
        env,
        cpus,
        run_dir / "tts.stderr.log",
        f"http://127.0.0.1:{port}",
        nice,
    )


def start_bridge(
    run_dir: Path,
    cpus: set[int] | None,
    *,
    db_dir: Path,
    tts_url: str,
    token: str,
    greeting: str,
    extra_env: dict[str, str],
    nice: int = 0,
    src: Path = REPO,
    port: int | None = None,
) -> Child:
    """A bridge on `port` (else a free one) with a fresh database in `db_dir` (several
    bridges given one `db_dir` share it, as a fleet does)."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "BRIDGE_HOST": "127.0.0.1",
        "BRIDGE_PORT": str(port),
        "BRIDGE_PUBLIC_URL": url,
        # A fresh database (and its secret.key beside it) per run: no state between runs.
        "BRIDGE_DATABASE_URL": f"sqlite+aiosqlite:///{db_dir / 'bridge.db'}",
        "BRIDGE_LOG_LEVEL": "warning",
        "BRIDGE_LOG_FORMAT": "json",  # the report scans it for errors
        "BRIDGE_SILMA_ENDPOINT": tts_url,
        "BRIDGE_DEFAULT_USER_TOKEN": token,
        # The emulated carriers sign nothing: loopback only, as `make run` does.
        "BRIDGE_ALLOW_UNSIGNED_WEBHOOKS": "true",
        "BRIDGE_AGENT_KIND": "scripted",
        "BRIDGE_AGENT_GREETING": greeting,
        **extra_env,
    }
    return start_child("bridge", ["serve"], env, cpus, run_dir / "bridge.stderr.log", url, nice,
                       src)


def start_standin(
    run_dir: Path,
    cpus: set[int] | None,
    *,
    first_audio_s: float,
    rtf: float,
    nice: int = 0,
    port: int | None = None,
) -> Child:
    """The pre-rendered TTS stand-in (tts_standin.py): the sim engine's speech and latency
    model on our protocol, its replies served from memory; as `start_tts` for the rest."""
    port = port or free_port()
    args = [
        "--port", str(port),
        "--first-audio", str(first_audio_s),
        "--rtf", str(rtf),
        # Room for every request at once, as start_tts gives the sim server: never busy.
        "--concurrency", "10000",
        "--max-queue", "10000",
        # Kept across runs: the first start renders the sim's speech with Piper (seconds).
        "--cache-dir", str(REPO / "data" / "sim-cache"),
    ]
    env = {"PYTHONPATH": str(REPO / "scripts"), "BRIDGE_LOG_LEVEL": "warning"}
    return start_child(
        "tts-standin",
        args,
        env,
        cpus,
        run_dir / "tts.stderr.log",
        f"http://127.0.0.1:{port}",
        nice,
        module="loadtest_lib.tts_standin",
    )
