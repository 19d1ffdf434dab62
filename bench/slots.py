"""Free-slot endpoint under realistic data: 200 doctors, 200,000 appointments.

Measures ``GET /api/v1/doctors/{id}/slots`` for one doctor's month through HTTP on one
clinic instance: median and p95 latency and requests per second. Last line: JSON.
Run: ``.venv/bin/python bench/slots.py``.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx

from clinic.core.security import hash_password
from harness import clinic_instances, database, summary_ms

DOCTORS = 200
PER_DOCTOR = 1000  # 200,000 appointments in all
PATIENTS = 5000
REQUESTS = 400
CONCURRENCY = 4

ZONES = ["Europe/Berlin", "America/New_York", "Asia/Tokyo", "Europe/London", "UTC"]


async def seed(url: str) -> int:
    """Bulk-load the data set with SQL; returns the id of the doctor to measure."""
    conn = await asyncpg.connect(url)
    try:
        pw = hash_password("bench password 12345")
        await conn.execute(
            """
            INSERT INTO users (email, name, password_hash, role, time_zone)
            SELECT 'doctor' || i || '@bench.example.org', 'Dr. Bench ' || i, $1, 'doctor',
                   ($2::text[])[1 + i % array_length($2::text[], 1)]
            FROM generate_series(1, $3) AS i
            """,
            pw,
            ZONES,
            DOCTORS,
        )
        await conn.execute(
            """
            INSERT INTO doctors (user_id, specialty, licence_number, approved_at, min_notice_minutes)
            SELECT id, 'Specialty ' || (id % 10), 'BENCH-' || id, now(), 0 FROM users
            WHERE role = 'doctor'
            """
        )
        await conn.execute(
            """
            INSERT INTO weekly_hours (doctor_id, weekday, start_time, end_time)
            SELECT d.user_id, wd, t.s, t.e FROM doctors d
            CROSS JOIN generate_series(0, 6) AS wd
            CROSS JOIN (VALUES ('09:00'::time, '12:00'::time), ('13:00', '17:00')) AS t(s, e)
            """
        )
        await conn.execute(
            """
            INSERT INTO users (email, name, password_hash, role, time_zone)
            SELECT 'patient' || i || '@bench.example.org', 'Patient ' || i, $1, 'patient', 'UTC'
            FROM generate_series(1, $2) AS i
            """,
            pw,
            PATIENTS,
        )
        await conn.execute(
            "INSERT INTO patients (user_id, date_of_birth) "
            "SELECT id, DATE '1980-01-01' FROM users WHERE role = 'patient'"
        )
        doctor_ids = [r[0] for r in await conn.fetch("SELECT user_id FROM doctors ORDER BY 1")]
        patient_ids = [r[0] for r in await conn.fetch("SELECT user_id FROM patients ORDER BY 1")]
        # Appointment k of every doctor is at the same instant (4 a day, 2 hours apart, from
        # 120 days ago); patients are spread so that no patient holds two at one time.
        start = datetime.now(UTC).replace(hour=9, minute=0, second=0, microsecond=0)
        start -= timedelta(days=120)
        await conn.execute(
            """
            INSERT INTO appointments
              (doctor_id, patient_id, starts_at, ends_at, buffer_ends_at, reason)
            SELECT d.id, ($2::bigint[])[1 + (d.n - 1 + $4 * (k % 25)) % array_length($2::bigint[], 1)],
                   $3::timestamptz + (k / 4) * interval '1 day' + (k % 4) * interval '2 hours',
                   $3::timestamptz + (k / 4) * interval '1 day' + (k % 4) * interval '2 hours' + interval '30 minutes',
                   $3::timestamptz + (k / 4) * interval '1 day' + (k % 4) * interval '2 hours' + interval '30 minutes',
                   'bench'
            FROM unnest($1::bigint[]) WITH ORDINALITY AS d(id, n)
            CROSS JOIN generate_series(0, $5 - 1) AS k
            """,
            doctor_ids,
            patient_ids,
            start,
            DOCTORS,
            PER_DOCTOR,
        )
        # Past appointments are history (completed), as in a clinic that has been running;
        # otherwise the job worker's no-show sweep would rewrite ~100,000 rows mid-measurement.
        await conn.execute(
            "UPDATE appointments SET status = 'completed' WHERE ends_at < now() - interval '1 hour'"
        )
        await conn.execute("ANALYZE")
        total = await conn.fetchval("SELECT count(*) FROM appointments")
        print(
            f"seeded {len(doctor_ids)} doctors, {len(patient_ids)} patients, {total} appointments"
        )
        return int(doctor_ids[len(doctor_ids) // 2])
    finally:
        await conn.close()


async def measure(base: str, doctor_id: int) -> dict[str, float]:
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    params = {"start": start.isoformat(), "end": (start + timedelta(days=31)).isoformat()}
    path = f"/api/v1/doctors/{doctor_id}/slots"
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        r = await http.get(path, params=params)
        r.raise_for_status()
        print(f"one month: {len(r.json()['slots'])} free slots for doctor {doctor_id}")
        for _ in range(20):  # warm-up
            await http.get(path, params=params)
        # Latency: one request at a time, so queueing does not count as latency.
        for _ in range(REQUESTS):
            t0 = time.perf_counter()
            resp = await http.get(path, params=params)
            latencies.append(time.perf_counter() - t0)
            assert resp.status_code == 200, resp.text
        # Throughput: CONCURRENCY clients at once.
        queue = iter(range(REQUESTS))
        done = 0

        async def worker() -> None:
            nonlocal done
            for _ in queue:
                resp = await http.get(path, params=params)
                assert resp.status_code == 200, resp.text
                done += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        elapsed = time.perf_counter() - t0
    median, p95 = summary_ms(latencies)
    return {"median_ms": round(median, 2), "p95_ms": round(p95, 2), "rps": round(done / elapsed, 1)}


def main() -> None:
    with database() as url:
        t0 = time.perf_counter()
        doctor_id = asyncio.run(seed(url))
        print(f"seeding took {time.perf_counter() - t0:.1f}s")
        with clinic_instances(url, 1) as (base,):
            result = asyncio.run(measure(base, doctor_id))
    result.update(
        doctors=DOCTORS,
        appointments=DOCTORS * PER_DOCTOR,
        requests=REQUESTS,
        concurrency=CONCURRENCY,
    )
    print(
        f"slots for one doctor's month: median {result['median_ms']} ms, "
        f"p95 {result['p95_ms']} ms, {result['rps']} req/s on one instance"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
