"""Hundreds of patients race for one slot over two app instances on one database: exactly one
gets it (201), every other one hears 409, and none gets a server error, round after round."""

from __future__ import annotations

import asyncio
import collections
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import func, select, text

from clinic.appointments.models import Appointment
from clinic.core.config import Settings
from clinic.core.security import hash_password, token_digest
from conftest import serve
from factories import make_doctor

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


@pytest.fixture
async def instances(settings: Settings) -> AsyncIterator[list[str]]:
    """Two app instances (each its own engine, pool and job worker) on one database."""
    servers = [await serve(settings) for _ in range(INSTANCES)]
    yield [url for _, _, url in servers]
    for server, _, _ in servers:
        server.should_exit = True
    for _, task, _ in servers:
        await task


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
    gate = asyncio.Event()

    async def book(n: int) -> int:
        await gate.wait()
        r = await clients[n % len(clients)].post(
            "/api/v1/appointments",
            json={"doctor_id": doctor_id, "starts_at": starts_at.isoformat(), "reason": "race"},
            headers={"Authorization": f"Bearer {tokens[n]}"},
        )
        if r.status_code not in (201, 409):
            print(f"client {n}: HTTP {r.status_code}: {r.text[:300]}")
        return r.status_code

    tasks = [asyncio.create_task(book(n)) for n in range(len(tokens))]
    await asyncio.sleep(0.1)
    gate.set()
    return dict(collections.Counter(await asyncio.gather(*tasks)))
