"""Issue 10's proofs of the shadow step and of the early breach, through the real daemon, Envoy
and the clinic (one daemon for all four, blue live throughout but for d's few seconds):

a) no live traffic: the shadow step decides from synthetic reads, says so, and passes;
b) under load (pages, API, static, a patient reading their appointments): a release as fast
   as blue passes the shadow step, with its per-group figures in ``bluegreen history``;
c) a release whose GET pages answer 300 ms late is refused at the shadow step; the deploy
   output shows green's p95 against blue's; the load saw only blue's release, 0 failures;
d) a release failing a quarter of the users' requests is switched to atomically and rolled
   back by the early breach, long before its 120 s analysis window ends; the history says
   when the breach became conclusive and how many user requests failed.

a and b are ``--manual`` deploys cancelled (``bluegreen rollback``) while they wait for
approval, right after their shadow step: a passing deploy would otherwise wait out d's
120 s analysis window before the next scenario could start.

``pytest -s`` prints a table of the figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from bluegreen_harness import (
    REPO,
    SMOKE_PASSWORD,
    Stats,
    bluegreen,
    bluegreen_rc,
    deploy_of,
    get_loop,
    history,
    make_config,
    open_loop,
    pid_alive,
    release_copy_with,
    state_root,
    steps_of,
    wait_idle_live,
)

pytestmark = pytest.mark.slow
__all__ = ["state_root"]  # the fixture, imported so pytest finds it here

ANALYSIS_WINDOW = 120  # seconds: only an early breach can decide d within the test
GET_RATE = 20  # GET requests a second the load sends (mirrored: twice that for the app)
LOAD_PATHS = (
    "/",
    "/doctors",
    "/version",
    "/api/v1/doctors",
    "/api/v1/clinic",
    "/static/clinic.css",
)

SLOW_PAGES = '''"""Injected by tests/e2e/test_shadow_deploy.py: GET pages answer 300 ms late."""

import asyncio

FAST = ("/api/", "/static/", "/healthz/")


class Fault:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if (
            scope["type"] == "http"
            and scope["method"] in ("GET", "HEAD")
            and path != "/version"
            and not path.startswith(FAST)
        ):
            await asyncio.sleep(0.3)
        await self.app(scope, receive, send)
'''

FAILING = '''"""Injected by tests/e2e/test_shadow_deploy.py: every fourth request a user
sends answers 500. The deploy's checks before the switch are spared (the smoke journey, an
httpx client; mirrored reads; Envoy's health checks), so that only the analysis after the
switch can catch it, which is what the test proves."""

import itertools

from clinic.core.request_context import is_shadow

BODY = b"injected fault"
counter = itertools.count()


def spared(scope):
    if scope["path"].startswith("/healthz/") or is_shadow(scope):
        return True
    agent = dict(scope["headers"]).get(b"user-agent", b"")
    return agent.startswith(b"python-httpx")


class Fault:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and not spared(scope) and next(counter) % 4 == 0:
            headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(BODY))]
            await send({"type": "http.response.start", "status": 500, "headers": headers})
            await send({"type": "http.response.body", "body": BODY})
            return
        await self.app(scope, receive, send)
'''

ROW = re.compile(
    r"^(?P<group>pages|api|static|all)\s+(?P<blue_n>\d+)/(?P<green_n>\d+)\s+"
    r"(?P<blue_5xx>[\d.]+)/(?P<green_5xx>[\d.]+)\s+\S+/\S+\s+"
    r"(?P<blue_p95>[\d-]+)/(?P<green_p95>[\d-]+)\s+\S+/\S+\s*$",
    re.MULTILINE,
)
SAMPLE = re.compile(r"(\d+) mirrored requests: (\d+) from users, (\d+) synthetic")
CONCLUSIVE = re.compile(
    r"conclusive (?P<after>[\d.]+)s after the switch \(window (?P<window>[\d.]+)s\); "
    r"(?P<failed>\d+) of (?P<total>\d+) user requests"
)


def config_for(tmp: Path) -> Path:
    """The harness config with the shadow step on and a long analysis window."""
    path = make_config(tmp, shadow=True)
    text = path.read_text()
    assert "analysis_window = 3\n" in text
    path.write_text(text.replace("analysis_window = 3\n", f"analysis_window = {ANALYSIS_WINDOW}\n"))
    return path


def shadow_table(output: str) -> dict[str, dict[str, Any]]:
    """The shadow step's table (blue live, green shadow) by group: requests, 5xx %, p95 ms."""
    rows: dict[str, dict[str, Any]] = {}
    for m in ROW.finditer(output):
        rows[m["group"]] = {
            k: (None if v == "-" else float(v)) for k, v in m.groupdict().items() if k != "group"
        }
    assert set(rows) == {"pages", "api", "static", "all"}, output
    return rows


def sample_of(output: str) -> tuple[int, int, int]:
    """(mirrored, from users, synthetic) as the shadow step states them."""
    m = SAMPLE.search(output)
    assert m, output
    return int(m[1]), int(m[2]), int(m[3])


async def shadow_only(tmp: Path, config: Path, copy: Path) -> dict[str, Any]:
    """Deploy ``copy`` with ``--manual`` and cancel it once it waits for approval, that is
    right after its shadow step passed; the deploy as the history has it."""
    deploying = asyncio.create_task(
        asyncio.to_thread(bluegreen_rc, tmp, config, "deploy", "--manual", "--path", str(copy))
    )
    source = f"path:{await asyncio.to_thread(copy.resolve)}"
    deadline = time.monotonic() + 300
    while True:
        assert not deploying.done(), f"deploy ended before its approval: {deploying.result()}"
        assert time.monotonic() < deadline, "no approval step within 300 s"
        found = [
            d for d in await asyncio.to_thread(history, tmp, config, 5) if d["source"] == source
        ]
        waiting = found and steps_of(found[0]).get("approve", {}).get("status") == "running"
        if waiting:
            break
        await asyncio.sleep(1)
    cancelled = await asyncio.to_thread(bluegreen, tmp, config, "rollback")
    assert "cancelled before its switch" in cancelled, cancelled
    rc, out = await deploying
    assert rc == 1, out
    return await asyncio.to_thread(deploy_of, tmp, config, copy)


def figures_of(rows: dict[str, dict[str, Any]]) -> str:
    return ", ".join(
        f"{g} p95 {r['blue_p95']:.0f}/{r['green_p95']:.0f} ms ({r['green_n']:.0f} mirrored)"
        for g, r in rows.items()
        if r["blue_p95"] is not None and r["green_p95"] is not None
    )


async def log_in_patient(public: str) -> dict[str, str]:
    async with httpx.AsyncClient(base_url=public, trust_env=False, timeout=30) as c:
        resp = await c.post(
            "/api/v1/auth/token",
            json={
                "email": "smoke-patient@smoke.example.org",
                "password": SMOKE_PASSWORD,
                "name": "e2e shadow",
            },
        )
        assert resp.status_code == 201, resp.text
        return {"Authorization": f"Bearer {resp.json()['token']}"}


async def served_since(stats: Stats, since: float) -> set[str | None]:
    """Releases that answered the load's ``/version`` since ``since`` (waits for some)."""
    for _ in range(50):
        seen = {r for t, r in stats.releases if t > since}
        if seen:
            return seen
        await asyncio.sleep(0.1)
    raise AssertionError("the load saw no /version answer")


@dataclass
class World:
    """The running daemon as the scenarios use it."""

    tmp: Path
    config: Path
    public: str
    blue_release: str


Row = tuple[str, str, str]


@contextlib.asynccontextmanager
async def load(public: str, auth: dict[str, str]) -> AsyncIterator[Stats]:
    """Users reading through the public listener until the block ends: pages, API and
    static files, ``GET_RATE`` a second arriving on their own (:func:`open_loop`), and a
    patient reading their appointments once a second."""
    stats = Stats()
    stop = asyncio.Event()
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=30), connector=aiohttp.TCPConnector(limit=200)
    ) as session:
        mine = ["/api/v1/appointments"]
        tasks = [
            asyncio.create_task(
                open_loop(session, public, stats, stop, GET_RATE, paths=LOAD_PATHS)
            ),
            asyncio.create_task(
                get_loop(session, public, stats, stop, 1.0, paths=mine, headers=auth)
            ),
        ]
        try:
            await asyncio.sleep(2)  # the load is on before anything is compared
            yield stats
        finally:
            stop.set()
            await asyncio.gather(*tasks)


async def no_traffic(w: World, copy: Path) -> Row:
    """a) No live traffic at all: the shadow step reads for itself, says so, and passes."""
    d = await shadow_only(w.tmp, w.config, copy)
    shadow = steps_of(d)["shadow"]
    assert shadow["status"] == "ok", shadow
    mirrored, real, synthetic = sample_of(shadow["output"])
    assert real == 0 and synthetic > 0 and mirrored >= 50, shadow["output"]
    rows = shadow_table(shadow["output"])
    print(f"\n--- a) shadow step, no traffic:\n{shadow['output']}")
    return (
        "a  no traffic",
        "shadow passed",
        f"{mirrored} mirrored: {real} from users, {synthetic} synthetic; " + figures_of(rows),
    )


async def as_fast(w: World, copy: Path) -> Row:
    """b) Under load, a release as fast as blue passes; its figures are in the history."""
    d = await shadow_only(w.tmp, w.config, copy)
    shadow = steps_of(d)["shadow"]
    assert shadow["status"] == "ok", shadow
    mirrored, real, synthetic = sample_of(shadow["output"])
    assert real > 0, shadow["output"]
    rows = shadow_table(shadow["output"])
    for group in ("pages", "api", "static"):
        assert rows[group]["green_n"] > 0, shadow["output"]
        assert rows[group]["green_p95"] is not None, shadow["output"]
    print(f"\n--- b) shadow step, as fast as blue:\n{shadow['output']}")
    return (
        "b  as fast as blue",
        "shadow passed",
        f"{mirrored} mirrored ({real} from users, {synthetic} synthetic); " + figures_of(rows),
    )


async def slow_pages(w: World, copy: Path, stats: Stats) -> Row:
    """c) GET pages 300 ms slower: refused at the shadow step, before any user saw them;
    the deploy output has green's p95 against blue's."""
    t0, failed0 = time.time(), len(stats.failures)
    rc, out = await asyncio.to_thread(bluegreen_rc, w.tmp, w.config, "deploy", "--path", str(copy))
    t1 = time.time()
    assert rc == 1, out
    d = await asyncio.to_thread(deploy_of, w.tmp, w.config, copy)
    assert d["status"] == "failed", d
    s = steps_of(d)
    assert s["shadow"]["status"] == "failed" and "switch" not in s, s
    assert "shadow breached: pages" in d["error"], d["error"]
    assert "--- shadow output:" in out and "blue (live) / green (shadow)" in out, out
    pages = shadow_table(out)["pages"]
    assert pages["green_p95"] >= 250 and pages["green_p95"] > pages["blue_p95"], out
    assert {r for t, r in stats.releases if t0 <= t <= t1} == {w.blue_release}
    assert stats.failures[failed0:] == [], stats.failures[failed0:][:10]
    answers = sum(1 for t, _ in stats.releases if t0 <= t <= t1)
    print(f"\n--- c) bluegreen deploy, +300 ms pages:\n{out[max(0, out.find('✘')) :]}")
    return (
        "c  +300 ms GET pages",
        "refused at shadow",
        f"pages p95 blue {pages['blue_p95']:.0f} ms / green {pages['green_p95']:.0f} ms; "
        f"load: 0 failed, only blue's release in {answers} /version answers during the deploy",
    )


async def failing(w: World, copy: Path, stats: Stats) -> Row:
    """d) A quarter of requests failing after an atomic switch: rolled back by the early
    breach, long before the analysis window ends; blue serves everyone afterwards."""
    failed0 = len(stats.failures)
    rc, out = await asyncio.to_thread(bluegreen_rc, w.tmp, w.config, "deploy", "--path", str(copy))
    back_at = time.time()
    assert rc == 1, out
    d = await asyncio.to_thread(deploy_of, w.tmp, w.config, copy)
    assert d["status"] == "rolled_back", d
    s = steps_of(d)
    assert s["shadow"]["status"] == "ok" and s["switch"]["status"] == "ok", s
    assert s["analyse"]["status"] == "failed", s["analyse"]
    assert "analysis breached: error rate" in d["error"], d["error"]
    m = CONCLUSIVE.search(s["analyse"]["output"])
    assert m, s["analyse"]["output"]
    after, failed = float(m["after"]), int(m["failed"])
    assert float(m["window"]) == ANALYSIS_WINDOW
    assert after < ANALYSIS_WINDOW / 2, s["analyse"]["output"]  # decided early, not at the end
    assert failed > 0
    await asyncio.sleep(1)
    assert await served_since(stats, back_at + 0.5) == {w.blue_release}
    seen_failed = stats.failures[failed0:]
    print(f"\n--- d) analyse step, 25 % failing:\n{d['error']}\n{s['analyse']['output']}")
    assert all(": 500 " in f for f in seen_failed), seen_failed[:10]
    return (
        "d  25 % failing, atomic",
        "rolled back early",
        f"conclusive {after:.1f} s after the switch (window {ANALYSIS_WINDOW} s); {failed} of "
        f"{m['total']} user requests to green failed (history); the load saw {len(seen_failed)}",
    )


async def scenarios(w: World, copies: dict[str, Path], summary: list[Row]) -> None:
    """a without traffic, then b, c and d under one load."""
    summary.append(await no_traffic(w, copies["quiet"]))
    auth = await log_in_patient(w.public)
    async with load(w.public, auth) as stats:
        summary.append(await as_fast(w, copies["as-fast"]))
        summary.append(await slow_pages(w, copies["slow-pages"], stats))
        summary.append(await failing(w, copies["failing"], stats))
    summary.append(("load", "", f"{stats.ok} answered, {len(stats.failures)} failed (all in d)"))


async def test_shadow_step_and_early_breach(state_root: Path) -> None:
    tmp = state_root
    config = config_for(tmp)
    copies = {
        name: await asyncio.to_thread(release_copy_with, tmp, name, fault)
        for name, fault in (
            ("quiet", None),
            ("as-fast", None),
            ("slow-pages", SLOW_PAGES),
            ("failing", FAILING),
        )
    }
    summary: list[Row] = []
    daemon_pid: int | None = None
    try:
        bluegreen(tmp, config, "up", "--detach", "--path", str(REPO))
        info = json.loads((tmp / "bluegreen" / "daemon.json").read_text())
        daemon_pid = int(info["pid"])
        st = await wait_idle_live(tmp, config)
        assert st["live_colour"] == "blue"
        w = World(tmp, config, info["public"], st["live_release"])
        await scenarios(w, copies, summary)
        assert history(tmp, config, 1)[0]["status"] == "rolled_back"
    finally:
        print("\n--- shadow step and early breach (issue 10) ---")
        for row in summary:
            print(f"{row[0]:<24} {row[1]:<18} {row[2]}")
        if daemon_pid is not None and pid_alive(daemon_pid):
            bluegreen(tmp, config, "down", timeout=120)
    assert daemon_pid is not None and not pid_alive(daemon_pid)
