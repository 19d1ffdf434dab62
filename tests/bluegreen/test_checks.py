from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from bluegreen.checks import AnalysisThresholds, Stats, analyse, http_check
from bluegreen.config import AnalysisConfig
from bluegreen.hooks import child_env, run_hook


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


async def wait_gone(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        await asyncio.sleep(0.05)
    return not pid_alive(pid)


# --------------------------------------------------------------------------- http_check


@pytest.fixture
async def server() -> AsyncIterator[str]:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="fine")

    async def bad(request: web.Request) -> web.Response:
        return web.Response(status=503, text="not ready yet")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.Response(text="late")

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/bad", bad)
    app.router.add_get("/slow", slow)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_http_check_ok(server: str) -> None:
    r = await http_check(f"{server}/ok", 2.0)
    assert r.ok and r.status == 200


async def test_http_check_non_2xx(server: str) -> None:
    r = await http_check(f"{server}/bad", 2.0)
    assert not r.ok and r.status == 503
    assert "503" in r.detail and "not ready yet" in r.detail


async def test_http_check_timeout(server: str) -> None:
    start = time.monotonic()
    r = await http_check(f"{server}/slow", 0.3)
    assert not r.ok and r.status is None
    assert "no answer within 0.3s" in r.detail
    assert time.monotonic() - start < 1.5


async def test_http_check_connection_refused() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = await http_check(f"http://127.0.0.1:{port}/", 1.0)
    assert not r.ok and r.status is None
    assert "ConnectError" in r.detail


# --------------------------------------------------------------------------- run_hook


async def test_run_hook_success_streams_lines(tmp_path: Path) -> None:
    lines: list[str] = []
    code = "import os, sys; print('one'); print('two', file=sys.stderr); print(os.environ['X'])"
    r = await run_hook(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={"X": "from-env"},
        timeout=10,
        log=lines.append,
    )
    assert r.ok and r.exit_code == 0 and not r.timed_out
    assert sorted(lines) == sorted(["one", "two", "from-env"])
    assert "one" in r.output and "two" in r.output


async def test_run_hook_failure_exit_code(tmp_path: Path) -> None:
    r = await run_hook(
        f"{sys.executable} -c 'import sys; print(\"bad\"); sys.exit(3)'",
        cwd=tmp_path,
        env={},
        timeout=10,
        log=lambda _: None,
    )
    assert not r.ok and r.exit_code == 3
    assert r.output == "bad"


async def test_run_hook_missing_command(tmp_path: Path) -> None:
    r = await run_hook(["/nonexistent/hook"], cwd=tmp_path, env={}, timeout=5, log=lambda _: None)
    assert not r.ok and r.exit_code is None
    assert "cannot run hook" in r.output


async def test_run_hook_timeout_kills_process_group(tmp_path: Path) -> None:
    code = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    lines: list[str] = []
    start = time.monotonic()
    r = await run_hook(
        [sys.executable, "-c", code], cwd=tmp_path, env={}, timeout=1.0, log=lines.append
    )
    assert time.monotonic() - start < 6
    assert not r.ok and r.timed_out
    assert "timed out after 1s" in r.output and "process group was killed" in r.output
    grandchild = int(lines[0])
    assert await wait_gone(grandchild), "grandchild survived the hook timeout"


def test_child_env_drops_admin_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLUEGREEN_ADMIN_TOKEN", "secret")
    env = child_env({"A": "1"})
    assert "BLUEGREEN_ADMIN_TOKEN" not in env
    assert env["A"] == "1" and env["PATH"] == os.environ["PATH"]


# --------------------------------------------------------------------------- analyse

T = AnalysisThresholds(
    max_error_rate=0.02, max_error_rate_ratio=2.0, max_p95_ratio=2.0, min_p95_ms=50, min_requests=20
)


def test_thresholds_from_config() -> None:
    assert AnalysisThresholds.from_config(AnalysisConfig()) == T


def test_inconclusive_passes() -> None:
    v = analyse(baseline=Stats(1000, 0, 0.05), candidate=Stats(19, 19, 5.0), thresholds=T)
    assert v.ok
    assert "inconclusive" in v.reason and "19 requests" in v.reason


def test_healthy_candidate_passes() -> None:
    v = analyse(baseline=Stats(1000, 10, 0.100), candidate=Stats(500, 5, 0.120), thresholds=T)
    assert v.ok and v.reason.startswith("healthy")
    assert v.figures["candidate_error_rate"] == pytest.approx(0.01)
    assert v.figures["candidate_p95_ms"] == pytest.approx(120)


def test_error_rate_breach() -> None:
    v = analyse(baseline=Stats(1000, 5, 0.1), candidate=Stats(100, 10, 0.1), thresholds=T)
    assert not v.ok
    assert "error rate 10.00%" in v.reason


def test_error_rate_above_absolute_but_not_relative_passes() -> None:
    # 5% > 2% absolute, but blue was already at 4%: 5% < 2x 4%.
    v = analyse(baseline=Stats(1000, 40, 0.1), candidate=Stats(100, 5, 0.1), thresholds=T)
    assert v.ok, v.reason


def test_error_rate_relative_but_not_absolute_passes() -> None:
    # 1% is 10x blue's 0.1%, but below the 2% absolute allowance.
    v = analyse(baseline=Stats(1000, 1, 0.1), candidate=Stats(100, 1, 0.1), thresholds=T)
    assert v.ok, v.reason


def test_p95_breach() -> None:
    v = analyse(baseline=Stats(1000, 0, 0.100), candidate=Stats(100, 0, 0.300), thresholds=T)
    assert not v.ok
    assert "p95 300ms > 2x baseline 100ms" in v.reason


def test_p95_ratio_but_small_difference_passes() -> None:
    # 3x slower, but only 20ms slower: below min_p95_ms.
    v = analyse(baseline=Stats(1000, 0, 0.010), candidate=Stats(100, 0, 0.030), thresholds=T)
    assert v.ok, v.reason


def test_p95_difference_but_within_ratio_passes() -> None:
    v = analyse(baseline=Stats(1000, 0, 1.0), candidate=Stats(100, 0, 1.5), thresholds=T)
    assert v.ok, v.reason


def test_both_breaches_reported() -> None:
    v = analyse(baseline=Stats(1000, 0, 0.1), candidate=Stats(100, 50, 1.0), thresholds=T)
    assert not v.ok
    assert "error rate" in v.reason and "p95" in v.reason and "; " in v.reason


def test_small_baseline_uses_absolute_error_rate_and_skips_p95() -> None:
    v = analyse(baseline=Stats(5, 0, 0.001), candidate=Stats(100, 1, 1.0), thresholds=T)
    assert v.ok and "baseline too small" in v.reason
    v = analyse(baseline=Stats(5, 5, 0.001), candidate=Stats(100, 3, 1.0), thresholds=T)
    assert not v.ok and "error rate 3.00%" in v.reason


def test_missing_p95_is_not_a_breach() -> None:
    v = analyse(baseline=Stats(1000, 0, None), candidate=Stats(100, 0, 5.0), thresholds=T)
    assert v.ok
