"""A 100 MB request body is refused with 413 while the instance's memory stays bounded.

The instance is a real ``clinic serve`` process; its memory is its VmRSS, sampled while the
body is sent over a raw socket (declared, chunked, and as a multipart form to a page).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from conftest import free_port

BODY = 100 * 1024 * 1024
CHUNK = 1024 * 1024
# Far below the body itself: before the limit, one such body cost the instance over 500 MB.
MEMORY_BOUND = 48 * 1024 * 1024


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@contextmanager
def running_instance(db_url: str, var: Path, **settings: str) -> Iterator[tuple[int, int]]:
    """(pid, port) of a ``clinic serve`` process, ready, with ``CLINIC_*`` ``settings``."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLINIC_")}
    env |= {
        "CLINIC_DATABASE_URL": db_url,
        "CLINIC_VAR_DIR": str(var),
        "CLINIC_WORKER_IN_PROCESS": "false",
        **{f"CLINIC_{name.upper()}": value for name, value in settings.items()},
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "clinic", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, "clinic serve exited early"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz/ready", timeout=1).is_success:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            raise AssertionError("clinic serve not ready")
        yield proc.pid, port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def instance(db_url: str, tmp_path: Path) -> Iterator[tuple[int, int]]:
    with running_instance(db_url, tmp_path / "var") as running:
        yield running


@pytest.fixture
async def peak() -> AsyncIterator[list[int]]:
    """A list the test fills with the pid to watch; holds the highest VmRSS seen after."""
    seen: list[int] = []
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            if len(seen) >= 1:
                rss = _rss(seen[0])
                if len(seen) == 1:
                    seen.append(rss)
                seen[1] = max(seen[1], rss)
            await asyncio.sleep(0.02)

    task = asyncio.create_task(sample())
    yield seen
    stop.set()
    await task


async def _send_huge(port: int, head: bytes, chunks: Iterator[bytes]) -> bytes:
    """Send ``head`` then ``chunks`` until the server answers or stops reading; the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = asyncio.create_task(reader.read(65536))
    try:
        writer.write(head)
        for chunk in chunks:
            if answer.done():
                break
            writer.write(chunk)
            try:
                await asyncio.wait_for(writer.drain(), timeout=5)
            except (TimeoutError, ConnectionError):
                break  # the server stopped reading our body: it answered or closed
        return await asyncio.wait_for(answer, timeout=30)
    finally:
        answer.cancel()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def _plain(total: int) -> Iterator[bytes]:
    block = b" " * CHUNK
    for _ in range(total // CHUNK):
        yield block


def _chunked(total: int) -> Iterator[bytes]:
    for block in _plain(total):
        yield f"{len(block):x}\r\n".encode() + block + b"\r\n"
    yield b"0\r\n\r\n"


def _status_and_body(answer: bytes) -> tuple[int, bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.mark.slow
async def test_a_100_mb_body_is_refused_within_a_memory_bound(
    instance: tuple[int, int], peak: list[int]
) -> None:
    pid, port = instance
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        for _ in range(20):  # warm up the paths the big requests take
            await http.post("/api/v1/auth/login", json={"name": "x"})
            await http.get("/login")
    baseline = _rss(pid)
    peak.append(pid)
    cases = {
        "declared JSON": (
            b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {BODY}\r\n\r\n".encode(),
            _plain(BODY),
        ),
        "chunked JSON": (
            b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n",
            _chunked(BODY),
        ),
        "chunked multipart page form": (
            b"POST /login HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\n"
            b"Content-Type: multipart/form-data; boundary=b0undary\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n",
            _chunked_multipart(BODY),
        ),
    }
    for name, (head, chunks) in cases.items():
        status, body = _status_and_body(await _send_huge(port, head, chunks))
        assert status == 413, name
        if b"multipart" not in head:
            assert json.loads(body)["error"]["code"] == "too_large"
    await asyncio.sleep(0.1)
    assert len(peak) == 2
    grew = peak[1] - baseline
    assert grew < MEMORY_BOUND, f"VmRSS grew by {grew / 2**20:.0f} MB"
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        assert (await http.get("/healthz/live")).status_code == 200
        small = await http.post("/api/v1/auth/login", json={"name": "x"})
        assert small.status_code == 422, "ordinary bodies still reach validation"


def _chunked_multipart(total: int) -> Iterator[bytes]:
    part = b'--b0undary\r\nContent-Disposition: form-data; name="email"\r\n\r\n'
    yield f"{len(part):x}\r\n".encode() + part + b"\r\n"
    yield from _chunked(total)
