"""The wheel, installed into a fresh virtual environment, runs outside the source tree: its
default settings, templates and static files are package data, `silma-bridge` is its command,
and the image's health check finds the port the settings give (issue 22).

Offline and in seconds: the wheel is built from a copy of the tree with the project
environment's setuptools (no build isolation), installed alone (--no-deps), and the fresh
environment sees the project environment's packages as plain path entries: the dependencies,
never the project's editable install of the source (that needs its .pth file run, and a .pth
file runs only from a site directory, not from a path entry).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60.0  # a cold start with the local Piper TTS server takes ~3 s here
STOP_TIMEOUT_S = 30.0  # SIGTERM drains: with no live call it exits at once


def _run(*argv: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ folder of a fresh virtual environment holding the wheel built from this tree."""
    tmp = tmp_path_factory.mktemp("wheel")
    # A copy: the build leaves build/ and *.egg-info behind, which the tree must not get.
    src = tmp / "src"
    shutil.copytree(REPO / "bridge", src / "bridge",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    wheels = tmp / "wheels"
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", "--wheel-dir", wheels, src)
    (wheel,) = wheels.glob("silma_bridge-*.whl")
    venv = tmp / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    _run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps",
         "--no-index", wheel)
    site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))")
                .strip())
    (site / "project-dependencies.pth").write_text(
        "".join(f"{sysconfig.get_path(kind)}\n" for kind in ("purelib", "platlib")),
        encoding="utf-8")
    return venv / "bin"


def _environment(port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    # A short greeting: the call below hears it through the local Piper TTS server. The
    # public URL (where the answer sends the media stream) is set with the port: this test is
    # about the package, not about which settings follow the port.
    return env | {"BRIDGE_HOST": "127.0.0.1", "BRIDGE_PORT": str(port),
                  "BRIDGE_PUBLIC_URL": f"http://127.0.0.1:{port}",
                  "BRIDGE_ALLOW_UNSIGNED_WEBHOOKS": "true", "BRIDGE_AGENT_GREETING": "Hello."}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_the_installed_package_is_the_wheels_not_the_source_tree(
        installed: Path, tmp_path: Path) -> None:
    where = _run(installed / "python", "-c",
                 "import bridge, bridge.settings as s; print(bridge.__file__, s.DEFAULT_CONFIG)",
                 cwd=tmp_path)
    package, defaults = where.split()
    assert Path(package).is_relative_to(installed.parent) and Path(defaults).is_file()


def test_version_is_the_projects(installed: Path, tmp_path: Path) -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "version"]
    assert _run(installed / "silma-bridge", "--version", cwd=tmp_path).strip() == (
        f"silma-bridge {version}")


class Served:
    def __init__(self, proc: asyncio.subprocess.Process, url: str, output: list[str]) -> None:
        self.proc, self.url, self.output = proc, url, output


@pytest.fixture
async def served(installed: Path, tmp_path: Path) -> AsyncIterator[Served]:
    """`silma-bridge serve` in an empty folder outside the source tree, listening: it says so
    on stderr once its services (store, local TTS server, warm pool) are open."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = await asyncio.create_subprocess_exec(
        installed / "silma-bridge", "serve", cwd=tmp_path, env=_environment(port),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    assert proc.stdout is not None
    output: list[str] = []
    listening = asyncio.Event()

    async def read() -> None:  # to the end, so the child never blocks on a full pipe
        assert proc.stdout is not None
        async for raw in proc.stdout:
            output.append(line := raw.decode(errors="replace").rstrip())
            if line.startswith(f"bridge listening on {url}"):
                listening.set()

    reader = asyncio.create_task(read())
    said = asyncio.create_task(listening.wait())
    try:
        async with asyncio.timeout(START_TIMEOUT_S):
            await asyncio.wait([reader, said], return_when=asyncio.FIRST_COMPLETED)
        assert listening.is_set(), "serve exited before listening:\n" + "\n".join(output)
        yield Served(proc, url, output)
    finally:
        said.cancel()
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(STOP_TIMEOUT_S):
            await proc.wait()
            await reader


async def test_serve_outside_the_source_tree_answers_health_pages_and_a_call(
        served: Served, installed: Path, tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{served.url}/health") as resp:
            assert resp.status == 200 and (await resp.json())["status"] == "ok"
        async with http.get(f"{served.url}/settings", allow_redirects=True) as resp:
            assert resp.status == 200 and "<html" in (await resp.text()).lower()
        async with http.get(f"{served.url}/static/base.css") as resp:
            assert resp.status == 200
    # The relative data paths are the working directory's (the image's data volume).
    assert (tmp_path / "data" / "bridge.db").is_file()
    # `call` finds the bridge from the same settings (BRIDGE_PORT), no --url.
    call = await asyncio.create_subprocess_exec(
        installed / "silma-bridge", "call", "--json", "--timeout", "30", cwd=tmp_path,
        env=_environment(int(served.url.rsplit(":", 1)[1])),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await call.communicate()
    assert call.returncode == 0, err.decode()
    report = json.loads(out)
    assert report["bytes_received"] > 0 and report["utterances"][0]["playout_done_s"]
    # Under BRIDGE_LOG_FORMAT=json every line is JSON; in the console format the access log
    # is a line of the bridge's own, not aiohttp's Apache-style one.
    assert any("http_request" in line and "path=/health" in line for line in served.output)


async def test_the_images_health_check_follows_the_configured_port(
        served: Served, installed: Path, tmp_path: Path) -> None:
    check = re.search(r"^HEALTHCHECK .*?\n\s*CMD (\[[^\n]*\])$",
                      (REPO / "Dockerfile").read_text(encoding="utf-8"), re.M | re.S)
    assert check is not None, "the Dockerfile has no HEALTHCHECK CMD in exec form"
    program, *args = json.loads(check.group(1))
    assert program == "python"
    port = int(served.url.rsplit(":", 1)[1])

    async def health_check(env: dict[str, str]) -> int:
        proc = await asyncio.create_subprocess_exec(installed / "python", *args, cwd=tmp_path,
                                                    env=env, stderr=asyncio.subprocess.DEVNULL)
        return await proc.wait()

    assert await health_check(_environment(port)) == 0
    assert await health_check(_environment(_free_port())) != 0  # nobody listens there


async def test_access_log_is_json_under_the_json_log_format(
        installed: Path, tmp_path: Path) -> None:
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        installed / "silma-bridge", "serve", cwd=tmp_path,
        env=_environment(port) | {"BRIDGE_LOG_FORMAT": "json"},
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(START_TIMEOUT_S):
            async for raw in proc.stdout:
                lines.append(line := raw.decode().rstrip())
                if line.startswith("bridge listening on"):
                    break
            async with aiohttp.ClientSession() as http, \
                    http.get(f"http://127.0.0.1:{port}/health?probe=1") as resp:
                assert resp.status == 200
            async for raw in proc.stdout:
                lines.append(line := raw.decode().rstrip())
                if '"http_request"' in line:
                    break
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(STOP_TIMEOUT_S):
            rest, _ = await proc.communicate()
    lines += rest.decode().splitlines()
    logged = [json.loads(line) for line in lines if line.startswith("{")]
    (access,) = [e for e in logged if e["event"] == "http_request"]
    assert (access["method"], access["path"], access["status"]) == ("GET", "/health", 200)
    # Every line is JSON but the one for people, saying where the bridge listens.
    assert [line for line in lines if not line.startswith("{")] == [
        line for line in lines if line.startswith("bridge listening on")]
    assert proc.returncode == 0
