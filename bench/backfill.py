"""A batched backfill of 200,000 appointments while patients book against the live app.

The data set of bench/slots.py (200 doctors, 200,000 appointments). A new nullable column
``appointments.reason_v2`` is added (instant), then filled from ``reason`` by
``clinic.migrations.backfill.backfill`` — run as a migration runs it: Alembic's migration
context on an asyncpg connection, the project's lock_timeout set first — while booking
clients (one patient each) book free slots through HTTP on one clinic instance.

Prints the batch times (median, longest: how long a batch holds its row locks), the total
time, the bookings' latencies before and during the backfill, and the longest time a booking
(and a batch) was seen waiting for a lock (pg_stat_activity, sampled every 10 ms). Last
line: JSON. Run: ``.venv/bin/python bench/backfill.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from clinic.migrations.backfill import BackfillResult, backfill
from harness import ROOT, clinic_env, database, free_port, percentile, wait_ready
from slots import seed

BATCH = 1000
PAUSE = 0.05
CLIENTS = 4
BASELINE_SECONDS = 8.0
BASELINE_BOOKINGS = 40
PASSWORD = "bench password 12345"  # bench/slots.py's patients


def run_backfill(url: str, out: dict[str, Any]) -> None:
    """The backfill as a migration's ``upgrade()`` runs it (see src/clinic/migrations/env.py)."""

    def migrate(conn: Connection) -> None:
        conn.exec_driver_sql("SET lock_timeout = '5s'")
        conn.exec_driver_sql("SET statement_timeout = '15min'")
        conn.commit()
        ctx = MigrationContext.configure(connection=conn)
        with Operations.context(ctx), ctx.begin_transaction():
            out["result"] = backfill(
                "appointments",
                set_="reason_v2 = reason",
                todo="reason_v2 IS NULL",
                batch_size=BATCH,
                pause=PAUSE,
                log=lambda line: print(f"  {line}", flush=True),
            )

    async def go() -> None:
        engine = create_async_engine(
            url.replace("postgresql://", "postgresql+asyncpg://", 1), poolclass=NullPool
        )
        async with engine.connect() as conn:
            await conn.run_sync(migrate)
        await engine.dispose()

    asyncio.run(go())


async def free_slots(c: httpx.AsyncClient, doctor_ids: list[int]) -> list[tuple[int, str]]:
    start = datetime.now(UTC) + timedelta(days=1)
    out: list[tuple[int, str]] = []
    for doctor_id in doctor_ids:
        resp = await c.get(
            f"/api/v1/doctors/{doctor_id}/slots",
            params={"start": start.isoformat(), "end": (start + timedelta(days=14)).isoformat()},
        )
        resp.raise_for_status()
        out += [(doctor_id, s["starts_at"]) for s in resp.json()["slots"]]
    random.shuffle(out)
    return out


async def login(base: str, email: str) -> httpx.AsyncClient:
    c = httpx.AsyncClient(base_url=base, timeout=60)
    resp = await c.post("/api/v1/auth/token", json={"email": email, "password": PASSWORD})
    resp.raise_for_status()
    c.headers["Authorization"] = f"Bearer {resp.json()['token']}"
    return c


async def client(
    c: httpx.AsyncClient,
    slots: list[tuple[int, str]],
    stop: asyncio.Event,
    during: threading.Event,
    latencies: dict[str, list[float]],
    statuses: dict[int, int],
) -> None:
    """Book one free slot after another until stopped; each booking's latency goes under
    "before" or "during" the backfill."""
    while not stop.is_set() and slots:
        doctor_id, starts_at = slots.pop()
        key = f"bench-{uuid.uuid4()}"
        phase = "during" if during.is_set() else "before"
        t0 = time.perf_counter()
        resp = await c.post(
            "/api/v1/appointments",
            json={"doctor_id": doctor_id, "starts_at": starts_at, "reason": key},
            headers={"Idempotency-Key": key},
        )
        latencies[phase].append(time.perf_counter() - t0)
        statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 1


async def lock_waits(url: str, stop: asyncio.Event, longest: dict[str, float]) -> None:
    """Sample pg_stat_activity every 10 ms: the longest any booking (INSERT) and any batch
    (UPDATE) of the backfill was seen waiting for a lock."""
    conn = await asyncpg.connect(url)
    try:
        while not stop.is_set():
            rows = await conn.fetch(
                "SELECT left(ltrim(query), 6) AS kind, "
                "extract(epoch FROM clock_timestamp() - query_start) AS waited "
                "FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND pid <> pg_backend_pid()"
            )
            for r in rows:
                kind = str(r["kind"]).upper()
                longest[kind] = max(longest.get(kind, 0.0), float(r["waited"]))
            await asyncio.sleep(0.01)
    finally:
        await conn.close()


async def measure(url: str, base: str) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("ALTER TABLE appointments ADD COLUMN reason_v2 TEXT")
        doctors = [r[0] for r in await conn.fetch("SELECT user_id FROM doctors ORDER BY 1")]
        emails = [
            r[0]
            for r in await conn.fetch(
                "SELECT email FROM users WHERE role = 'patient' ORDER BY id LIMIT $1", CLIENTS
            )
        ]
    finally:
        await conn.close()
    async with httpx.AsyncClient(base_url=base, timeout=60) as c:
        slots = await free_slots(c, random.sample(doctors, 40))
    clients = await asyncio.gather(*(login(base, e) for e in emails))
    stop, during, sampled = asyncio.Event(), threading.Event(), asyncio.Event()
    latencies: dict[str, list[float]] = {"before": [], "during": []}
    statuses: dict[int, int] = {}
    waits: dict[str, float] = {}
    sampler = asyncio.create_task(lock_waits(url, sampled, waits))
    tasks = [
        asyncio.create_task(client(c, slots, stop, during, latencies, statuses)) for c in clients
    ]
    await asyncio.sleep(BASELINE_SECONDS)
    while len(latencies["before"]) < BASELINE_BOOKINGS:  # noqa: ASYNC110 - a count, not an event
        await asyncio.sleep(0.2)
    out: dict[str, Any] = {}
    during.set()
    load_before = os.getloadavg()[0]
    await asyncio.to_thread(run_backfill, url, out)
    load_after = os.getloadavg()[0]
    stop.set()
    await asyncio.gather(*tasks)
    sampled.set()
    await sampler
    for c in clients:
        await c.aclose()
    result: BackfillResult = out["result"]
    conn = await asyncpg.connect(url)
    try:
        left = await conn.fetchval("SELECT count(*) FROM appointments WHERE reason_v2 IS NULL")
    finally:
        await conn.close()
    return {
        "rows": result.rows,
        "batches": result.batches,
        "batch_size": BATCH,
        "pause_s": PAUSE,
        "total_s": round(result.seconds, 2),
        "median_batch_ms": round(result.median_batch * 1000, 1),
        "longest_batch_ms": round(result.longest_batch * 1000, 1),
        "rows_left": int(left),
        "bookings_before": len(latencies["before"]),
        "bookings_during": len(latencies["during"]),
        "booking_p50_before_ms": _ms(latencies["before"], 0.5),
        "booking_max_before_ms": _ms(latencies["before"], 1.0),
        "booking_p50_during_ms": _ms(latencies["during"], 0.5),
        "booking_p95_during_ms": _ms(latencies["during"], 0.95),
        "longest_booking_ms": _ms(latencies["during"], 1.0),
        "longest_booking_lock_wait_ms": round(waits.get("INSERT", 0.0) * 1000, 1),
        "longest_batch_lock_wait_ms": round(waits.get("UPDATE", 0.0) * 1000, 1),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "clients": CLIENTS,
        "loadavg_1m": [round(load_before, 1), round(load_after, 1)],
        "cpus": os.cpu_count(),
    }


@contextlib.contextmanager
def clinic_instance(url: str) -> Iterator[str]:
    """One ``clinic serve`` on a free port (as harness.clinic_instances, with a readiness
    wait long enough for a busy machine)."""
    with tempfile.TemporaryDirectory(prefix="clinic-var-") as var:
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "clinic", "serve", "--port", str(port)],
            env={**clinic_env(url, var), "PYTHONPATH": str(ROOT / "src")},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_ready(base, timeout=180)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def _ms(values: list[float], q: float) -> float:
    return round(percentile(values, q) * 1000, 1) if values else 0.0


def main() -> None:
    with database() as url:
        t0 = time.perf_counter()
        asyncio.run(seed(url))
        print(f"seeding took {time.perf_counter() - t0:.1f}s", flush=True)
        with clinic_instance(url) as base:
            r = asyncio.run(measure(url, base))
    print(
        f"backfill of {r['rows']} appointments in {r['batches']} batches of {r['batch_size']}: "
        f"{r['total_s']} s in all; a batch held its locks {r['median_batch_ms']} ms "
        f"(median), {r['longest_batch_ms']} ms at most; {r['rows_left']} rows left"
    )
    print(
        f"bookings: {r['bookings_before']} before (p50 {r['booking_p50_before_ms']} ms, "
        f"max {r['booking_max_before_ms']} ms), {r['bookings_during']} during "
        f"(p50 {r['booking_p50_during_ms']} ms, p95 {r['booking_p95_during_ms']} ms, "
        f"max {r['longest_booking_ms']} ms); statuses {r['statuses']}"
    )
    print(f"machine: {r['cpus']} CPUs, 1-minute load average {r['loadavg_1m']} (start, end)")
    print(
        f"longest lock wait seen: a booking {r['longest_booking_lock_wait_ms']} ms, a batch "
        f"{r['longest_batch_lock_wait_ms']} ms (pg_stat_activity sampled every 10 ms)"
    )
    print(json.dumps(r))


if __name__ == "__main__":
    main()
