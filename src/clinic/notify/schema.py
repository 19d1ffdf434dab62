"""procrastinate's schema as plain statements, for the clinic's own migrations.

The SQL is a frozen copy of procrastinate's ``sql/schema.sql`` (``clinic/data``), so a fresh
database gets the same schema whichever procrastinate version is installed; upgrading
procrastinate means a new migration that applies its delta files from ``sql/migrations``.
"""

from __future__ import annotations

from importlib.resources import files

import sqlparse

SCHEMA_FILE = "procrastinate-3.10-schema.sql"
PROCRASTINATE_TABLES = (
    "procrastinate_events",
    "procrastinate_periodic_defers",
    "procrastinate_jobs",
    "procrastinate_workers",
)


def procrastinate_sql() -> str:
    return (files("clinic") / "data" / SCHEMA_FILE).read_text(encoding="utf-8")


def split_statements(sql: str) -> list[str]:
    """One string per statement, comments dropped (sqlparse respects quotes and dollar
    quotes). asyncpg prepares every statement, and a prepared statement holds one command."""
    out = []
    for statement in sqlparse.split(sql, strip_semicolon=True):
        text = sqlparse.format(statement, strip_comments=True).strip()
        if text:
            out.append(text)
    return out


def procrastinate_statements() -> list[str]:
    return split_statements(procrastinate_sql())


PROCRASTINATE_DROP_SQL = """
DO $$
DECLARE
    fn regprocedure;
BEGIN
    DROP TABLE IF EXISTS procrastinate_events, procrastinate_periodic_defers,
        procrastinate_jobs, procrastinate_workers CASCADE;
    FOR fn IN
        SELECT p.oid::regprocedure FROM pg_proc p
        JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = current_schema() AND p.proname LIKE 'procrastinate\\_%'
    LOOP
        EXECUTE 'DROP FUNCTION ' || fn;
    END LOOP;
    DROP TYPE IF EXISTS procrastinate_job_to_defer_v1, procrastinate_job_event_type,
        procrastinate_job_status;
END;
$$
"""
