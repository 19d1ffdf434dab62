"""Running the clinic through the real bluegreen daemon in end-to-end tests: a config with
free ports and a temp state dir, the CLIs as subprocesses, and a bounded load generator."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from bluegreen.dataplane.envoy import Envoy
from bluegreen.dataplane.settings import AppPaths, DataPlaneSettings
from bluegreen.dataplane.table import Backend, RoutingTable

REPO = Path(__file__).resolve().parents[2]
TOKEN = "e2e-admin-token-0123456789abcdef"
SMOKE_PASSWORD = "e2e-smoke-password-4711"
IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "var", ".bluegreen", "__pycache__", "*.egg-info", ".*cache"
)


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


SHADOW_DURATION = 5
"""Seconds of the shadow step's window when a test turns it on (``make_config(shadow=True)``)."""


def make_config(tmp: Path, *, shadow: bool = False) -> Path:
    """The repo's bluegreen.toml with free ports, a temp state dir and short timings.

    The shadow step runs only when ``shadow`` is true (``[shadow] share = 1.0``, for a
    :data:`SHADOW_DURATION` window), whatever bluegreen.toml says: the other tests keep it
    off so that their deploys do not each wait out a shadow window."""
    text = with_shadow((REPO / "bluegreen.toml").read_text(), on=shadow)
    for addr in ("127.0.0.1:8000", "127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8443"):
        assert addr in text
        text = text.replace(f'"{addr}"', '"127.0.0.1:0"')
    swaps = {
        'dir = "var/releases"': f'dir = "{tmp}/var/releases"',
        # bluegreen's own files (daemon.json, logs, Envoy) under tmp/bluegreen; the app's
        # (app_dir, given as CLINIC_VAR_DIR: secrets, pgdata) under tmp/var.
        'dir = ".bluegreen"': f'dir = "{tmp}/bluegreen"',
        'app_dir = "var"': f'app_dir = "{tmp}/var"',
        "analysis_window = 30": "analysis_window = 3",
        "scale_down_delay = 300": "scale_down_delay = 120",
        "drain = 10": "drain = 5",
        "ready = 60": "ready = 90",
    }
    for old, new in swaps.items():
        assert old in text, old
        text = text.replace(old, new)
    path = tmp / "bluegreen.toml"
    path.write_text(text)
    return path


def with_shadow(text: str, *, on: bool) -> str:
    """``text`` (a bluegreen.toml) with its ``[shadow]`` share set to 1.0 (and its duration
    to :data:`SHADOW_DURATION`) or to 0.0."""
    head = re.search(r"(?m)^\[shadow\][ \t]*$", text)
    assert head, "bluegreen.toml has no [shadow] table"
    nxt = re.search(r"(?m)^\[", text[head.end() :])
    end = head.end() + nxt.start() if nxt else len(text)
    section = text[head.end() : end]
    swaps = {"share": "1.0" if on else "0.0"}
    if on:
        swaps["duration"] = str(SHADOW_DURATION)
    for key, value in swaps.items():
        section, n = re.subn(rf"(?m)^{key}[ \t]*=[ \t]*[0-9.]+", f"{key} = {value}", section)
        assert n == 1, f"[shadow] {key} not found in bluegreen.toml"
    return text[: head.end()] + section + text[end:]


def env(tmp: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("CLINIC_")}
    e.update(
        BLUEGREEN_ADMIN_TOKEN=TOKEN,
        CLINIC_SMOKE_PASSWORD=SMOKE_PASSWORD,
        CLINIC_VAR_DIR=str(tmp / "var"),
        CLINIC_LOGIN_SLOWDOWN_SECONDS="0",
        PYTHONPATH=str(REPO / "src"),
    )
    return e


def bluegreen(tmp: Path, config: Path, *args: str, timeout: float = 300) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "bluegreen", "--config", str(config), *args],
        env=env(tmp),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, (
        f"bluegreen {args}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    )
    return proc.stdout


def clinic(tmp: Path, *args: str, extra: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "clinic", *args],
        env={**env(tmp), **(extra or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"clinic {args}: {proc.stdout}\n{proc.stderr}"
    return proc.stdout


@dataclass
class Stats:
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    colours: list[tuple[float, str | None]] = field(default_factory=list)
    releases: list[tuple[float, str | None]] = field(default_factory=list)  # from /version
    bookings: dict[str, int] = field(default_factory=dict)  # idempotency key -> appointment id


GET_PATHS = ("/", "/api/v1/doctors", "/version")


async def get_loop(
    session: aiohttp.ClientSession,
    base: str,
    stats: Stats,
    stop: asyncio.Event,
    interval: float,
    *,
    paths: Sequence[str] = GET_PATHS,
    headers: Mapping[str, str] | None = None,
) -> None:
    """One client: a GET of one of ``paths`` (at random) every ``interval`` seconds, each
    after the previous one was answered, until ``stop`` (see :func:`get_once`)."""
    while not stop.is_set():
        started = time.time()
        await get_once(session, base, random.choice(paths), stats, headers)
        await asyncio.sleep(max(0.0, interval - (time.time() - started)))


async def open_loop(
    session: aiohttp.ClientSession,
    base: str,
    stats: Stats,
    stop: asyncio.Event,
    rate: float,
    *,
    paths: Sequence[str] = GET_PATHS,
) -> None:
    """Users arriving on their own: ``rate`` GETs per second on a fixed schedule, whether
    or not the earlier ones were answered, until ``stop``. A colour that stalls gets a
    queue, as it would in production; a client that waits for each answer would slow down
    for the live colour only, never for a colour its requests are mirrored to."""
    pending: set[asyncio.Task[None]] = set()
    due = time.monotonic()
    while not stop.is_set():
        task = asyncio.create_task(get_once(session, base, random.choice(paths), stats))
        pending.add(task)
        task.add_done_callback(pending.discard)
        due += 1 / rate
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, due - time.monotonic()))
    await asyncio.gather(*pending)


async def get_once(
    session: aiohttp.ClientSession,
    base: str,
    path: str,
    stats: Stats,
    headers: Mapping[str, str] | None = None,
) -> None:
    """GET ``path``: a 5xx, or anything but 200 outside ``/api/v1/doctors``, is a failure;
    a ``/version`` answer is recorded (which colour and release served it, when)."""
    started = time.time()
    try:
        async with session.get(base + path, headers=headers) as resp:
            body = await resp.read()
            if resp.status >= 500 or (path != "/api/v1/doctors" and resp.status != 200):
                stats.failures.append(f"GET {path}: {resp.status} {body[:200]!r}")
            else:
                stats.ok += 1
                if path == "/version":
                    served = json.loads(body)
                    stats.colours.append((started, served.get("color")))
                    stats.releases.append((started, served.get("release")))
    except (aiohttp.ClientError, TimeoutError) as exc:
        stats.failures.append(f"GET {path}: {exc!r}")


async def booking_loop(
    session: aiohttp.ClientSession,
    base: str,
    stats: Stats,
    stop: asyncio.Event,
    slots: asyncio.Queue[tuple[int, str]],
    auth: dict[str, str],
) -> None:
    while not stop.is_set() and not slots.empty():
        doctor_id, starts_at = slots.get_nowait()
        key = f"e2e-{uuid.uuid4()}"
        body = {"doctor_id": doctor_id, "starts_at": starts_at, "reason": key}
        for _attempt in range(5):  # a retry with the same key must not double-book
            try:
                async with session.post(
                    base + "/api/v1/appointments",
                    json=body,
                    headers={**auth, "Idempotency-Key": key},
                ) as resp:
                    data = await resp.json(content_type=None)
                    if resp.status in (200, 201):
                        stats.bookings[key] = int(data["id"])
                        stats.ok += 1
                    elif resp.status >= 500:
                        stats.failures.append(f"POST booking: {resp.status} {data}")
                        continue
                    # 409: slot taken meanwhile - not a failure of the deploy
                    break
            except (aiohttp.ClientError, TimeoutError) as exc:
                stats.failures.append(f"POST booking: {exc!r}")
        await asyncio.sleep(0.2)


async def free_slots(base: str, auth: dict[str, str]) -> list[tuple[int, str]]:
    async with httpx.AsyncClient(base_url=base, headers=auth, trust_env=False, timeout=30) as c:
        doctors = (await c.get("/api/v1/doctors")).json()
        start = datetime.now(UTC) + timedelta(days=2)
        out: list[tuple[int, str]] = []
        for d in doctors[:6]:
            resp = await c.get(
                f"/api/v1/doctors/{d['id']}/slots",
                params={"start": start.isoformat(), "end": (start + timedelta(days=5)).isoformat()},
            )
            if resp.status_code == 200:
                out += [(int(d["id"]), s["starts_at"]) for s in resp.json()["slots"]]
    random.shuffle(out)
    return out


def bluegreen_rc(tmp: Path, config: Path, *args: str, timeout: float = 300) -> tuple[int, str]:
    """``bluegreen ARGS`` that may fail: (exit code, stdout + stderr)."""
    proc = subprocess.run(
        [sys.executable, "-m", "bluegreen", "--config", str(config), *args],
        env=env(tmp),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr


def history(tmp: Path, config: Path, limit: int = 50) -> list[dict[str, Any]]:
    """``bluegreen history --json``: the deploys, newest first, with their steps."""
    data = json.loads(bluegreen(tmp, config, "history", "--json", "--limit", str(limit)))
    assert isinstance(data, list)
    return data


def deploy_of(tmp: Path, config: Path, copy: Path) -> dict[str, Any]:
    """The newest deploy of ``copy`` (deployed with ``--path``) in the history."""
    found = [d for d in history(tmp, config) if d["source"] == f"path:{copy.resolve()}"]
    assert found, f"no deploy of {copy} in the history"
    return found[0]


def steps_of(deploy: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A deploy's steps by name."""
    return {s["name"]: s for s in deploy["steps"]}


def release_copy_with(tmp: Path, name: str, middleware: str | None = None) -> Path:
    """A copy of the repository as deployed (``--path``), a release of its own (a marker
    file makes its content, hence its id, differ from every other copy's). ``middleware``:
    the source of a module defining an ASGI middleware class ``Fault``, which the copy's
    ``create_app`` wraps around everything (a release with an injected fault)."""
    dest = tmp / "copies" / name
    shutil.copytree(REPO, dest, ignore=IGNORE)
    (dest / "E2E_RELEASE").write_text(f"{name}\n")
    if middleware is not None:
        (dest / "src" / "clinic" / "e2e_fault.py").write_text(middleware)
        app_py = dest / "src" / "clinic" / "app.py"
        text = app_py.read_text()
        tail = "\n    return app\n"
        assert text.endswith(tail), "create_app no longer ends with `return app`"
        hook = "\n    from clinic.e2e_fault import Fault\n\n    app.add_middleware(Fault)"
        app_py.write_text(text[: -len(tail)] + hook + tail)
    return dest


def status(tmp: Path, config: Path) -> dict[str, Any]:
    data = json.loads(bluegreen(tmp, config, "status", "--json"))
    assert isinstance(data, dict)
    return data


async def wait_idle_live(tmp: Path, config: Path, within: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        st = await asyncio.to_thread(status, tmp, config)
        if (
            st["live_colour"]
            and st["running_deploy"] is None
            and st["instances"]
            and all(i["healthy"] for i in st["instances"])
        ):
            return st
        assert time.monotonic() < deadline, f"not idle: {st}"
        await asyncio.sleep(1)


@pytest.fixture
def state_root() -> Iterator[Path]:
    """A world-traversable temp dir: the embedded PostgreSQL runs as another user when we are
    root, and pytest keeps its own tmp dirs owner-only (re-applied by every pytest run)."""
    d = Path(tempfile.mkdtemp(prefix="bluegreen-e2e-"))
    d.chmod(0o755)
    yield d
    pid_file = d / "var" / "pgdata" / "postmaster.pid"
    if pid_file.exists():  # the test failed before `down`: do not leak the server
        with contextlib.suppress(ValueError, OSError):
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)
            time.sleep(2)
    shutil.rmtree(d, ignore_errors=True)


@dataclass
class HttpsApp:
    """The test app behind Envoy with TLS on: its https URL and the generated certificate."""

    base_url: str
    cert: Path
    envoy: Envoy


@pytest.fixture
async def https_app(app: Any, tmp_path: Path) -> AsyncIterator[HttpsApp]:
    """The clinic of the ``app`` fixture served over HTTPS by bluegreen's data plane (Envoy,
    a self-signed certificate it generates), as ``make up`` serves it."""
    settings = DataPlaneSettings(health_interval=0.2, health_timeout=0.5).with_ports()
    envoy = Envoy(settings, state_dir=tmp_path / "var", app_paths=AppPaths())
    await envoy.start()
    try:
        port = int(app.base_url.rsplit(":", 1)[1])
        backend = Backend("blue-1", "blue", "127.0.0.1", port)
        await envoy.apply(RoutingTable(live="blue", preview=None, backends=(backend,)))
        cert = envoy.layout.tls / "cert.pem"
        yield HttpsApp(base_url=envoy.urls()["https"], cert=cert, envoy=envoy)
    finally:
        await envoy.stop()
