"""What the benchmarks need: a throwaway embedded PostgreSQL and clinic instances as processes."""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from clinic.core import schema  # noqa: E402
from clinic.core.embedded import EmbeddedPostgres  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def database() -> Iterator[str]:
    """A migrated database in a throwaway embedded cluster; yields its postgresql:// URL."""
    with tempfile.TemporaryDirectory(prefix="clinic-bench-") as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "pg", ephemeral=True)
        try:
            url = pg.ensure_database("bench")
            schema.upgrade(url.replace("postgresql://", "postgresql+asyncpg://", 1))
            yield url
        finally:
            pg.stop()


def clinic_env(url: str, var_dir: Path | str) -> dict[str, str]:
    return {
        **os.environ,
        "CLINIC_DATABASE_URL": url,
        "CLINIC_VAR_DIR": str(var_dir),
        "CLINIC_SECRET_KEY": "bench-secret-key-0123456789",
        "CLINIC_SMOKE_PASSWORD": "bench-smoke-password-1",
    }


@contextlib.contextmanager
def clinic_instances(url: str, count: int = 1) -> Iterator[list[str]]:
    """``count`` clinic instances (``clinic serve``) on free ports; yields their base URLs."""
    with tempfile.TemporaryDirectory(prefix="clinic-var-") as var:
        procs, urls = [], []
        try:
            for _ in range(count):
                port = free_port()
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "clinic", "serve", "--port", str(port)],
                        env={**clinic_env(url, var), "PYTHONPATH": str(ROOT / "src")},
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
                urls.append(f"http://127.0.0.1:{port}")
            for base in urls:
                wait_ready(base)
            yield urls
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()


def wait_ready(base: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/healthz/ready", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{base} not ready after {timeout}s")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary_ms(latencies_s: list[float]) -> tuple[float, float]:
    ms = [v * 1000 for v in latencies_s]
    return statistics.median(ms), percentile(ms, 0.95)


@contextlib.contextmanager
def clinic_colours(
    url: str, colours: tuple[str, ...] = ("blue", "green")
) -> Iterator[dict[str, str]]:
    """One clinic instance per colour (``/version`` names it), on free ports; yields
    ``{colour: base URL}``."""
    with tempfile.TemporaryDirectory(prefix="clinic-var-") as var:
        procs: list[subprocess.Popen[bytes]] = []
        urls: dict[str, str] = {}
        try:
            for colour in colours:
                port = free_port()
                env = {**clinic_env(url, var), "PYTHONPATH": str(ROOT / "src")}
                env["BLUEGREEN_COLOR"] = colour
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "clinic", "serve", "--port", str(port)],
                        env=env,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
                urls[colour] = f"http://127.0.0.1:{port}"
            for base in urls.values():
                wait_ready(base, timeout=180)  # imports take long on a busy machine
            yield urls
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
