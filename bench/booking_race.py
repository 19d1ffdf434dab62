"""200 concurrent clients over real HTTP race for the same 20 slots, on two instances.

Each client walks the 20 slots in its own random order and stops at its first booking.
Afterwards SQL counts overlapping active appointments. It must show exactly 20 booked,
0 errors, 0 overlaps. Last line: JSON with ``booked``, ``conflicts``, ``errors``, ``overlaps``.
Run: ``.venv/bin/python bench/booking_race.py``.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx

from clinic.core.security import hash_password
from harness import clinic_instances, database

CLIENTS = 200
SLOTS = 20
INSTANCES = 2


async def seed(url: str) -> tuple[int, list[str], list[str]]:
    """One doctor with exactly 20 slots tomorrow (10:00–20:00 UTC, 30 min) and 200 patients
    with API tokens. Returns the doctor id, the slot starts and the tokens."""
    import hashlib
    import secrets

    conn = await asyncpg.connect(url)
    try:
        pw = hash_password("race password 12345")
        doctor_id = await conn.fetchval(
            "INSERT INTO users (email, name, password_hash, role, time_zone) "
            "VALUES ('race-doctor@bench.example.org', 'Dr. Race', $1, 'doctor', 'UTC') RETURNING id",
            pw,
        )
        await conn.execute(
            "INSERT INTO doctors (user_id, specialty, licence_number, approved_at, min_notice_minutes)"
            " VALUES ($1, 'Racing', 'RACE-1', now(), 0)",
            doctor_id,
        )
        day = (datetime.now(UTC) + timedelta(days=1)).date()
        await conn.execute(
            "INSERT INTO schedule_overrides (doctor_id, day, kind, start_time, end_time) "
            "VALUES ($1, $2, 'extra', '10:00', '20:00')",
            doctor_id,
            day,
        )
        tokens = [f"clk_{secrets.token_urlsafe(24)}" for _ in range(CLIENTS)]
        ids = await conn.fetch(
            "INSERT INTO users (email, name, password_hash, role, time_zone) "
            "SELECT 'racer' || i || '@bench.example.org', 'Racer ' || i, $1, 'patient', 'UTC' "
            "FROM generate_series(1, $2) AS i RETURNING id",
            pw,
            CLIENTS,
        )
        await conn.executemany(
            "INSERT INTO patients (user_id, date_of_birth) VALUES ($1, DATE '1990-01-01')",
            [(r["id"],) for r in ids],
        )
        await conn.executemany(
            "INSERT INTO api_tokens (user_id, name, token_hash) VALUES ($1, 'race', $2)",
            [
                (r["id"], hashlib.sha256(t.encode()).hexdigest())
                for r, t in zip(ids, tokens, strict=True)
            ],
        )
        start = datetime(day.year, day.month, day.day, 10, tzinfo=UTC)
        slots = [(start + timedelta(minutes=30 * i)).isoformat() for i in range(SLOTS)]
        return int(doctor_id), slots, tokens
    finally:
        await conn.close()


async def race(
    bases: list[str], doctor_id: int, slots: list[str], tokens: list[str]
) -> dict[str, int]:
    counts = {"booked": 0, "conflicts": 0, "errors": 0, "requests": 0}
    # Client keep-alive shorter than uvicorn's 5 s: a pooled connection the server has just
    # closed as idle would otherwise fail a POST with a ReadError (seen: 1-5 in 3,600).
    clients = [
        httpx.AsyncClient(
            base_url=b,
            timeout=30,
            limits=httpx.Limits(max_connections=CLIENTS, keepalive_expiry=2.0),
        )
        for b in bases
    ]
    # Free slots as the API sees them, to confirm there are exactly 20 to race for.
    r = await clients[0].get(
        f"/api/v1/doctors/{doctor_id}/slots",
        params={
            "start": slots[0],
            "end": (datetime.fromisoformat(slots[-1]) + timedelta(hours=1)).isoformat(),
        },
    )
    assert len(r.json()["slots"]) == SLOTS, r.text
    gate = asyncio.Event()

    async def client(n: int) -> None:
        http = clients[n % len(clients)]
        order = random.Random(n).sample(slots, len(slots))
        await gate.wait()
        for starts_at in order:
            counts["requests"] += 1
            try:
                resp = await http.post(
                    "/api/v1/appointments",
                    json={"doctor_id": doctor_id, "starts_at": starts_at, "reason": "race"},
                    headers={
                        "Authorization": f"Bearer {tokens[n]}",
                        "Idempotency-Key": f"race-{n}-{starts_at}",
                    },
                )
            except httpx.HTTPError as exc:
                counts["errors"] += 1
                print(f"client {n}: {type(exc).__name__}: {exc}")
                continue
            if resp.status_code == 201:
                counts["booked"] += 1
                return
            if resp.status_code == 409:
                counts["conflicts"] += 1
            else:
                counts["errors"] += 1
                print(f"client {n}: HTTP {resp.status_code}: {resp.text[:300]}")

    tasks = [asyncio.create_task(client(n)) for n in range(CLIENTS)]
    await asyncio.sleep(0.2)
    t0 = time.perf_counter()
    gate.set()
    await asyncio.gather(*tasks)
    counts["elapsed_ms"] = round((time.perf_counter() - t0) * 1000)
    for c in clients:
        await c.aclose()
    return counts


async def overlaps(url: str) -> tuple[int, int]:
    conn = await asyncpg.connect(url)
    try:
        overlapping = await conn.fetchval(
            """
            SELECT count(*) FROM appointments a JOIN appointments b
              ON a.id < b.id AND a.status <> 'cancelled' AND b.status <> 'cancelled'
             AND (a.doctor_id = b.doctor_id AND tstzrange(a.starts_at, a.buffer_ends_at) && tstzrange(b.starts_at, b.buffer_ends_at)
               OR a.patient_id = b.patient_id AND tstzrange(a.starts_at, a.ends_at) && tstzrange(b.starts_at, b.ends_at))
            """
        )
        rows = await conn.fetchval("SELECT count(*) FROM appointments WHERE status = 'booked'")
        return int(overlapping), int(rows)
    finally:
        await conn.close()


def main() -> None:
    with database() as url:
        doctor_id, slots, tokens = asyncio.run(seed(url))
        with clinic_instances(url, INSTANCES) as bases:
            result = asyncio.run(race(bases, doctor_id, slots, tokens))
        result["overlaps"], result["rows_booked"] = asyncio.run(overlaps(url))
    result.update(clients=CLIENTS, slots=SLOTS, instances=INSTANCES)
    print(
        f"{CLIENTS} clients, {SLOTS} slots, {INSTANCES} instances: {result['booked']} booked, "
        f"{result['conflicts']} conflicts (409), {result['errors']} errors, "
        f"{result['overlaps']} overlaps, {result['rows_booked']} rows in {result['elapsed_ms']} ms"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
