"""Hundreds of patients race for one slot over two app processes on one database: exactly one
gets it (201), every other one hears 409, and none gets a server error, round after round.

The instances are real ``clinic serve`` processes, as in production: served from the test's
own event loop, 300 clients and two servers would share one core and the race would measure
that core, not the booking."""

from __future__ import annotations

import asyncio
import collections
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select, text

from clinic.appointments.models import Appointment
from clinic.core.config import Settings
from clinic.core.security import hash_password, token_digest
from conftest import free_port
from factories import make_doctor
from notify_fixtures import eventually

CLIENTS = 300
ROUNDS = 3
INSTANCES = 2


async def _patients_with_tokens(sessions, count: int) -> list[str]:
    """``count`` patients with one API token each, inserted in bulk (registering them one by
    one would spend the test hashing passwords)."""
    tokens = [f"clk_{secrets.token_urlsafe(24)}" for _ in range(count)]
    tag = secrets.token_hex(4)
    async with sessions() as s, s.begin():
        ids = (
            await s.execute(
                text(
                    "INSERT INTO users (email, name, password_hash, role, time_zone)"
                    " SELECT 'racer' || i || '-' || :tag || '@example.org', 'Racer ' || i, :pw,"
                    " 'patient', 'UTC' FROM generate_series(1, :n) AS i RETURNING id"
                ),
                {"tag": tag, "pw": hash_password("race password 12345"), "n": count},
            )
        ).scalars()
        ids = list(ids)
        await s.execute(
            text("INSERT INTO patients (user_id, date_of_birth) VALUES (:id, DATE '1990-01-01')"),
            [{"id": i} for i in ids],
        )
        await s.execute(
            text("INSERT INTO api_tokens (user_id, name, token_hash) VALUES (:id, 'race', :h)"),
            [{"id": i, "h": token_digest(t)} for i, t in zip(ids, tokens, strict=True)],
        )
    return tokens


async def _ready(url: str, proc: subprocess.Popen[bytes]) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"instance at {url} exited with {proc.returncode}")
    try:
        async with httpx.AsyncClient(timeout=1) as client:
            return (await client.get(url + "/version")).status_code == 200
    except httpx.HTTPError:
        return False


def _start(settings: Settings, tmp_path: Path, n: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "CLINIC_DATABASE_URL": str(settings.database_url),
        "CLINIC_ENVIRONMENT": "test",
        "CLINIC_SECRET_KEY": settings.secret_key,
        "CLINIC_VAR_DIR": str(tmp_path / f"var-{n}"),
    }
    with (tmp_path / f"instance-{n}.log").open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "clinic", "serve", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return proc, f"http://127.0.0.1:{port}"


def _stop(procs: list[tuple[subprocess.Popen[bytes], str]]) -> None:
    for proc, _ in procs:
        proc.terminate()
    for proc, _ in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
async def instances(settings: Settings, tmp_path: Path) -> AsyncIterator[list[str]]:
    """Two ``clinic serve`` processes (each its own engine, pool and job worker) on one
    database."""
    procs: list[tuple[subprocess.Popen[bytes], str]] = []
    try:
        for n in range(INSTANCES):
            procs.append(_start(settings, tmp_path, n))
        for proc, url in procs:
            await eventually(lambda proc=proc, url=url: _ready(url, proc), timeout=60)
        yield [url for _, url in procs]
    finally:
        _stop(procs)


async def test_hundreds_racing_for_one_slot_get_one_201_and_409s(
    instances, sessions, settings
) -> None:
    doctor = await make_doctor(sessions, settings, time_zone="UTC", hours=())
    day = (datetime.now(UTC) + timedelta(days=2)).date()
    async with sessions() as s, s.begin():
        await s.execute(
            text(
                "INSERT INTO schedule_overrides (doctor_id, day, kind, start_time, end_time)"
                " VALUES (:d, :day, 'extra', '09:00', '12:00')"
            ),
            {"d": doctor.user_id, "day": day},
        )
    tokens = await _patients_with_tokens(sessions, CLIENTS)
    limits = httpx.Limits(max_connections=CLIENTS, keepalive_expiry=2.0)
    clients = [httpx.AsyncClient(base_url=b, timeout=60, limits=limits) for b in instances]
    try:
        for round_ in range(ROUNDS):
            starts_at = datetime(day.year, day.month, day.day, 9 + round_, tzinfo=UTC)
            statuses = await _race(clients, tokens, doctor.user_id, starts_at)
            assert statuses == {201: 1, 409: CLIENTS - 1}, f"round {round_ + 1}: {statuses}"
    finally:
        for c in clients:
            await c.aclose()
    async with sessions() as s:
        booked = await s.scalar(
            select(func.count())
            .select_from(Appointment)
            .where(Appointment.doctor_id == doctor.user_id, Appointment.status == "booked")
        )
    assert booked == ROUNDS


async def _race(
    clients: list[httpx.AsyncClient], tokens: list[str], doctor_id: int, starts_at: datetime
) -> dict[int, int]:
    """Every client's final answer. An overloaded instance answers 503 ``busy`` with
    Retry-After (no connection free within CLINIC_DB_POOL_TIMEOUT; nothing was booked), and
    a client does what it says: tries again, with the same idempotency key."""
    gate = asyncio.Event()
    busy = 0

    async def book(n: int) -> int:
        nonlocal busy
        await gate.wait()
        for _ in range(20):
            r = await clients[n % len(clients)].post(
                "/api/v1/appointments",
                json={"doctor_id": doctor_id, "starts_at": starts_at.isoformat(), "reason": "race"},
                headers={
                    "Authorization": f"Bearer {tokens[n]}",
                    "Idempotency-Key": f"race-{starts_at:%H}-{n}",
                },
            )
            if r.status_code != 503 or r.json()["error"]["code"] != "busy":
                break
            busy += 1
            await asyncio.sleep(float(r.headers["retry-after"]))
        if r.status_code not in (201, 409):
            print(f"client {n}: HTTP {r.status_code}: {r.text[:300]}")
        return r.status_code

    tasks = [asyncio.create_task(book(n)) for n in range(len(tokens))]
    await asyncio.sleep(0.1)
    gate.set()
    statuses = dict(collections.Counter(await asyncio.gather(*tasks)))
    print(f"race at {starts_at:%H:%M}: {statuses}, {busy} answer(s) 503 busy, retried")
    return statuses
