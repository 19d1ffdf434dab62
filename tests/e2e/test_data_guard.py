"""A release whose migration deletes every appointment, deployed through the real bluegreen
daemon over release 1 with booked appointments (tests/fixtures/delete_appointments.patch):

* as written, the lint refuses it (``unbounded-delete``, ``data-change-in-expand``): no later
  step runs, no row is touched;
* with those two rules waived by the migration (``lint_ignore``), the lint passes and the
  rehearsal refuses it: on the scratch database the live release's sample appointments are
  gone after the migrations. The live database is untouched again.

Then the right way to change every appointment: a release whose migration fills a new column
with the batched backfill helper (tests/fixtures/backfill_reason.patch) is accepted by the
lint and the rehearsal and deployed; its progress is in the migrate step's output, and every
appointment (those booked during the deploy too) has the new value.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from bluegreen_harness import (
    IGNORE,
    REPO,
    SMOKE_PASSWORD,
    bluegreen,
    clinic,
    env,
    free_slots,
    make_config,
    pid_alive,
    state_root,
    status,
    wait_idle_live,
)

pytestmark = pytest.mark.slow
__all__ = ["state_root"]  # the fixture, imported so pytest finds it here

FIXTURES = REPO / "tests" / "fixtures"
PATCH = FIXTURES / "delete_appointments.patch"
MIGRATION = "src/clinic/migrations/versions/0006_purge_appointments.py"
WAIVER = (
    "\n# The lint rules that refuse this migration, waived: the rehearsal must catch it.\n"
    'lint_ignore = ["unbounded-delete", "data-change-in-expand"]\n'
)
BOOKINGS = 5
DESTROYS = "the migration would destroy the live release's data"


def release_copy(tmp: Path, name: str, *, patch: Path | None = PATCH, waive: bool = False) -> Path:
    dest = tmp / "copies" / name
    shutil.copytree(REPO, dest, ignore=IGNORE)
    if patch is None:
        return dest
    subprocess.run(["git", "init", "-q", str(dest)], check=True, capture_output=True)
    check = subprocess.run(
        ["git", "apply", "--check", str(patch)], cwd=dest, capture_output=True, text=True
    )
    if check.returncode != 0:
        pytest.fail(f"{patch.name} no longer applies:\n{check.stderr}", pytrace=False)
    subprocess.run(["git", "apply", str(patch)], cwd=dest, check=True, capture_output=True)
    if waive:
        with (dest / MIGRATION).open("a") as f:
            f.write(WAIVER)
    return dest


def deploy(tmp: Path, config: Path, copy: Path) -> tuple[int, str, dict[str, Any]]:
    """``bluegreen deploy --path copy``: exit code, output, and the deploy's history entry."""
    proc = subprocess.run(
        [sys.executable, "-m", "bluegreen", "--config", str(config), "deploy", "--path", str(copy)],
        env=env(tmp),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    data = json.loads(bluegreen(tmp, config, "history", "--json", "--limit", "20"))
    found = [d for d in data if d["source"] == f"path:{copy.resolve()}"]
    assert found, f"no deploy of {copy} in the history"
    return proc.returncode, proc.stdout + proc.stderr, found[0]


async def appointments(db_url: str) -> tuple[str, list[Any]]:
    """The schema revision and every appointment row, as the live database holds them."""
    conn = await asyncpg.connect(db_url)
    try:
        rev = await conn.fetchval("SELECT version_num FROM alembic_version")
        rows = await conn.fetch("SELECT * FROM appointments ORDER BY id")
        return str(rev), [tuple(r) for r in rows]
    finally:
        await conn.close()


async def book(public: str) -> int:
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
    slots = await free_slots(public, auth)
    booked = 0
    async with httpx.AsyncClient(base_url=public, headers=auth, trust_env=False, timeout=30) as c:
        for doctor_id, starts_at in slots:
            key = f"guard-{uuid.uuid4()}"
            resp = await c.post(
                "/api/v1/appointments",
                json={"doctor_id": doctor_id, "starts_at": starts_at, "reason": key},
                headers={"Idempotency-Key": key},
            )
            booked += resp.status_code == 201
            if booked == BOOKINGS:
                break
    return booked


def story(deploy: dict[str, Any]) -> str:
    return "\n".join(
        f"   {s['name']:<9} {s['status']:<8} {s['output'].strip().splitlines()[-1:]}"
        for s in deploy["steps"]
    )


async def test_deleting_every_appointment_is_refused_by_lint_and_by_rehearsal(
    state_root: Path,
) -> None:
    tmp = state_root
    config = make_config(tmp)
    release1 = await asyncio.to_thread(release_copy, tmp, "release1", patch=None)
    purge = await asyncio.to_thread(release_copy, tmp, "purge")
    waived = await asyncio.to_thread(release_copy, tmp, "purge-waived", waive=True)
    filled = await asyncio.to_thread(
        release_copy, tmp, "backfill", patch=FIXTURES / "backfill_reason.patch"
    )
    daemon_pid: int | None = None
    summary: list[str] = []
    try:
        bluegreen(tmp, config, "up", "--detach", "--path", str(release1))
        info = json.loads((tmp / "bluegreen" / "daemon.json").read_text())
        daemon_pid = int(info["pid"])
        # The first deploy builds the release environment (pip): slow on a busy machine.
        st = await wait_idle_live(tmp, config, within=1200)
        release1_id = st["live_release"]
        db_url = clinic(tmp, "db", "url", "--keep-running").strip().splitlines()[-1]
        clinic(tmp, "seed", extra={"CLINIC_DATABASE_URL": db_url})
        assert await book(info["public"]) == BOOKINGS
        rev0, rows0 = await appointments(db_url)
        # Ours, and whatever the first deploy's smoke test booked (and cancelled).
        assert rev0 == "0005" and len(rows0) >= BOOKINGS

        # ------------------------------------------------ as written: the lint refuses it
        code, out, d = await asyncio.to_thread(deploy, tmp, config, purge)
        summary.append(f"== lint: {d['status']} - {d['error']}\n{story(d)}")
        assert code == 1, out
        s = {x["name"]: x for x in d["steps"]}
        assert s["lint"]["status"] == "failed", s
        lint_out = s["lint"]["output"]
        assert "0006: [unbounded-delete] deletes every row of appointments" in lint_out
        assert "0006: [data-change-in-expand]" in lint_out
        assert "statement: DELETE FROM appointments" in lint_out
        assert "safe way: remove rows in a contract migration that names them" in lint_out
        assert "nothing was migrated" in (d["error"] or "")
        for later in ("rehearse", "migrate", "verify", "start", "switch"):
            assert s.get(later, {"status": "skipped"})["status"] == "skipped", s
        assert await appointments(db_url) == (rev0, rows0)

        # ------------------------------- rules waived: the rehearsal's row counts refuse it
        code, out, d = await asyncio.to_thread(deploy, tmp, config, waived)
        summary.append(f"== rehearsal: {d['status']} - {d['error']}\n{story(d)}")
        assert code == 1, out
        s = {x["name"]: x for x in d["steps"]}
        assert s["lint"]["status"] == "ok", s["lint"]
        assert s["rehearse"]["status"] == "failed", s
        assert (d["error"] or "").startswith(f"rehearse failed: {DESTROYS}: ") or DESTROYS in (
            d["error"] or ""
        ), d
        assert "appointments " in d["error"] and " -> 0 rows" in d["error"], d
        rehearsal = s["rehearse"]["output"]
        assert "0006 waives the lint rule unbounded-delete" in rehearsal
        assert "sample on the scratch database (smoke accounts and the live release's" in rehearsal
        assert "new release's migrations applied to the scratch database" in rehearsal
        assert "no contract migration declares removing them" in rehearsal
        for later in ("migrate", "verify", "start", "switch"):
            assert s.get(later, {"status": "skipped"})["status"] == "skipped", s
        assert await appointments(db_url) == (rev0, rows0)
        st = await asyncio.to_thread(status, tmp, config)
        assert (st["live_colour"], st["live_release"]) == ("blue", release1_id)

        # ------------------------------ the right way: a batched backfill, deployed
        code, out, d = await asyncio.to_thread(deploy, tmp, config, filled)
        summary.append(f"== backfill: {d['status']} - {d['error']}\n{story(d)}")
        assert code == 0, out
        s = {x["name"]: x for x in d["steps"]}
        assert s["lint"]["status"] == "ok" and s["rehearse"]["status"] == "ok", s
        assert "none lost" in s["rehearse"]["output"], s["rehearse"]["output"]
        migrate_out = s["migrate"]["output"]
        assert "backfill appointments: starting, 2 rows per batch" in migrate_out
        assert "rows in" in migrate_out and "backfill appointments: done, " in migrate_out
        assert await book(info["public"]) == BOOKINGS  # on the new release: the trigger fills
        conn = await asyncpg.connect(db_url)
        try:
            assert await conn.fetchval("SELECT version_num FROM alembic_version") == "0006"
            unfilled = await conn.fetchval(
                "SELECT count(*) FROM appointments "
                "WHERE reason_lower IS DISTINCT FROM lower(reason)"
            )
            total = await conn.fetchval("SELECT count(*) FROM appointments")
        finally:
            await conn.close()
        assert unfilled == 0 and total >= len(rows0) + BOOKINGS, (unfilled, total)
    finally:
        if daemon_pid is not None and pid_alive(daemon_pid):
            bluegreen(tmp, config, "down", timeout=120)
        print("\n" + "\n".join(summary))
    assert daemon_pid is not None and not pid_alive(daemon_pid)
