"""Signalling latency from one instance to another through PostgreSQL.

Two clinic instances (processes) share one embedded database. A doctor's websocket client on
instance A and a patient's on instance B join one visit; the doctor sends signals one at a time
and the time until the patient's client receives each is measured (websocket in, NOTIFY, LISTEN
on the other instance, websocket out). Small messages (a candidate) travel inside the NOTIFY;
large ones (an SDP past NOTIFY's 8000-byte limit) through ``visit_messages`` by reference.
Last line: JSON with ``median_ms`` and ``p99_ms`` (small messages; the common case), plus the
same for large ones. Aim: p99 under 20 ms. Run: ``.venv/bin/python bench/signalling.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import statistics
import time
from datetime import UTC, datetime, timedelta

import asyncpg

from clinic.core.security import hash_password
from clinic.visits.client import SignallingClient
from harness import clinic_instances, database, percentile

WARMUP = 50
SMALL = 1000
LARGE = 200


async def seed(url: str) -> tuple[int, str, str]:
    """A doctor, a patient, an appointment starting now; returns it and both API tokens."""
    conn = await asyncpg.connect(url)
    try:
        pw = hash_password("bench password 12345")
        doctor = await conn.fetchval(
            "INSERT INTO users (email, name, password_hash, role, time_zone) VALUES "
            "('sig-doctor@bench.example.org', 'Dr. Signal', $1, 'doctor', 'UTC') RETURNING id",
            pw,
        )
        await conn.execute(
            "INSERT INTO doctors (user_id, specialty, licence_number, approved_at) "
            "VALUES ($1, 'Signals', 'SIG-1', now())",
            doctor,
        )
        patient = await conn.fetchval(
            "INSERT INTO users (email, name, password_hash, role, time_zone) VALUES "
            "('sig-patient@bench.example.org', 'Pat Signal', $1, 'patient', 'UTC') RETURNING id",
            pw,
        )
        await conn.execute(
            "INSERT INTO patients (user_id, date_of_birth) VALUES ($1, DATE '1990-01-01')", patient
        )
        tokens = {}
        for who, uid in (("doctor", doctor), ("patient", patient)):
            raw = f"clk_{secrets.token_urlsafe(24)}"
            await conn.execute(
                "INSERT INTO api_tokens (user_id, name, token_hash) VALUES ($1, 'bench', $2)",
                uid,
                hashlib.sha256(raw.encode()).hexdigest(),
            )
            tokens[who] = raw
        starts = datetime.now(UTC)
        appointment = await conn.fetchval(
            "INSERT INTO appointments (doctor_id, patient_id, starts_at, ends_at, buffer_ends_at,"
            " reason) VALUES ($1, $2, $3, $4, $4, 'bench') RETURNING id",
            doctor,
            patient,
            starts,
            starts + timedelta(hours=1),
        )
        return int(appointment), tokens["doctor"], tokens["patient"]
    finally:
        await conn.close()


async def measure(
    sender: SignallingClient, receiver: SignallingClient, count: int, size: int
) -> list[float]:
    padding = "x" * size
    latencies = []
    for i in range(count):
        sent = time.perf_counter()
        await sender.signal({"seq": i, "pad": padding})
        message = await receiver.next_signal(within=5)
        latencies.append(time.perf_counter() - sent)
        assert message["data"]["seq"] == i, message
    return latencies


def figures(latencies: list[float]) -> tuple[float, float]:
    ms = [v * 1000 for v in latencies]
    return statistics.median(ms), percentile(ms, 0.99)


async def run(url: str, urls: list[str]) -> dict[str, float]:
    appointment, doctor_token, patient_token = await seed(url)
    doctor = SignallingClient(
        base_urls=[urls[0]],
        appointment_id=appointment,
        headers={"Authorization": f"Bearer {doctor_token}"},
    )
    patient = SignallingClient(
        base_urls=[urls[1]],
        appointment_id=appointment,
        headers={"Authorization": f"Bearer {patient_token}"},
    )
    async with patient, doctor:
        assert doctor.instance != patient.instance
        await doctor.wait_state(lambda s: s["present"]["patient"])
        await doctor.admit()
        await patient.wait_state(lambda s: s["admitted"])
        await doctor.wait_state(lambda s: s["admitted"])
        await measure(doctor, patient, WARMUP, 100)
        small = await measure(doctor, patient, SMALL, 200)
        large = await measure(doctor, patient, LARGE, 9000)
    small_median, small_p99 = figures(small)
    large_median, large_p99 = figures(large)
    print(f"instances: {urls[0]} (doctor) -> {urls[1]} (patient), one database")
    print(
        f"small signals (inline NOTIFY), n={SMALL}: median {small_median:.2f} ms, "
        f"p99 {small_p99:.2f} ms"
    )
    print(
        f"large signals (by reference, 9 KB), n={LARGE}: median {large_median:.2f} ms, "
        f"p99 {large_p99:.2f} ms"
    )
    return {
        "median_ms": round(small_median, 2),
        "p99_ms": round(small_p99, 2),
        "large_median_ms": round(large_median, 2),
        "large_p99_ms": round(large_p99, 2),
        "messages": SMALL + LARGE,
    }


def main() -> None:
    with database() as url, clinic_instances(url, 2) as urls:
        result = asyncio.run(run(url, urls))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
