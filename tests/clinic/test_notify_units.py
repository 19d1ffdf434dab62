"""The pure parts: times in words, rule names, cron lines, connection strings, the SQL
splitter, and migration 0002 both ways."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from clinic.core import schema
from clinic.core.db import make_engine
from clinic.notify.mail import local_time, rule_name
from clinic.notify.schema import procrastinate_statements, split_statements
from clinic.notify.worker import conninfo, tick_cron


def test_local_time_names_the_zone_and_offset() -> None:
    t = datetime(2026, 3, 3, 8, 30, tzinfo=UTC)
    assert (
        local_time(t, "Europe/Berlin") == "Tuesday 3 March 2026, 09:30 (Europe/Berlin, UTC+01:00)"
    )
    assert local_time(t, "America/St_Johns") == (
        "Tuesday 3 March 2026, 05:00 (America/St_Johns, UTC-03:30)"
    )


def test_rule_names_and_cron_lines() -> None:
    assert [rule_name(timedelta(hours=24)), rule_name(timedelta(minutes=90))] == ["24h", "90m"]
    assert tick_cron(timedelta(minutes=1)) == "*/1 * * * *"
    assert tick_cron(timedelta(seconds=5)) == "* * * * * */5"
    assert tick_cron(timedelta(hours=1)) == "0 * * * *"
    with pytest.raises(ValueError, match="CLINIC_JOBS_TICK"):
        tick_cron(timedelta(seconds=7))


def test_conninfo_keeps_the_unix_socket_and_maps_ssl() -> None:
    assert (
        conninfo("postgresql+asyncpg://postgres:@/t_1?host=/tmp/pg")
        == "postgresql://postgres:@/t_1?host=%2Ftmp%2Fpg"
    )
    assert conninfo("postgresql+asyncpg://u:p@db:5432/c?ssl=require") == (
        "postgresql://u:p@db:5432/c?sslmode=require"
    )


def test_split_statements_respects_dollar_quotes_and_strings() -> None:
    sql = "-- x; y\nCREATE FUNCTION f() AS $$ BEGIN RAISE 'a;b'; END; $$;\nSELECT 'it''s; ok';"
    assert split_statements(sql) == [
        "CREATE FUNCTION f() AS $$ BEGIN RAISE 'a;b'; END; $$",
        "SELECT 'it''s; ok'",
    ]
    assert len(procrastinate_statements()) == 42


async def test_migration_0002_downgrades_and_upgrades_cleanly(db_url: str) -> None:
    engine = make_engine(db_url, pool_size=1)

    async def leftovers() -> int:
        async with engine.connect() as conn:
            return int(
                await conn.scalar(
                    text(
                        "SELECT (SELECT count(*) FROM pg_class WHERE relname LIKE 'procrastinate%'"
                        " OR relname IN"
                        " ('audit_records', 'outbox', 'sent_emails', 'reminders_sent'))"
                        " + (SELECT count(*) FROM pg_proc WHERE proname LIKE 'procrastinate%'"
                        " OR proname = 'audit_records_append_only')"
                        " + (SELECT count(*) FROM pg_type WHERE typname LIKE 'procrastinate%')"
                    )
                )
                or 0
            )

    try:
        assert await leftovers() > 0
        await asyncio.to_thread(schema.downgrade, db_url, "0001")
        assert await leftovers() == 0
        await asyncio.to_thread(schema.upgrade, db_url)
        assert await leftovers() > 0
    finally:
        await engine.dispose()


def test_emails_are_signed_with_the_configured_clinic(settings) -> None:
    from clinic.appointments.notices import AppointmentFacts, Party, facts_args
    from clinic.notify.tasks import compose

    facts = AppointmentFacts(
        id=7,
        sequence=2,
        starts_at=datetime(2026, 3, 3, 8, 30, tzinfo=UTC),
        ends_at=datetime(2026, 3, 3, 9, 0, tzinfo=UTC),
        doctor=Party("Dr. Anna Weber", "anna@example.org", "Europe/Berlin"),
        patient=Party("Maria Rossi", "maria@example.org", "Europe/Rome"),
    )
    configured = settings.model_copy(
        update={"clinic_name": "Lakeside Clinic", "clinic_phone": "+1 555 0100"}
    )
    args = {"facts": facts_args(facts), "stamp": "2026-03-01T00:00:00+00:00"}
    booked = compose(
        {**args, "kind": "appointment", "change": "booked", "role": "patient"}, configured
    )
    reminder = compose({**args, "kind": "reminder", "rule": "24h"}, configured)
    for email in (booked, reminder):
        assert "Lakeside Clinic" in email.body and "Phone: +1 555 0100" in email.body
        assert configured.clinic_emergency_notice in email.body
        assert "Time: 09:30–10:00 (Europe/Rome, UTC+01:00)" in email.body
