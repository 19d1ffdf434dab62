"""procrastinate's schema as plain statements, for the clinic's own migrations.

The SQL is a frozen copy of procrastinate's ``sql/schema.sql`` (``clinic/data``), so a fresh
database gets the same schema whichever procrastinate version is installed; upgrading
procrastinate means a new migration that applies its delta files from ``sql/migrations``.
"""

from __future__ import annotations

from importlib.resources import files

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
    """Split SQL on top-level semicolons, respecting quotes, dollar quotes and comments.

    asyncpg prepares every statement, and a prepared statement holds one command only.
    """
    statements: list[str] = []
    current: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end == -1 else end + 1
            current.append("\n")
            continue
        if ch == "'":
            end = i + 1
            while True:
                end = sql.index("'", end)
                if sql.startswith("''", end):
                    end += 2
                    continue
                break
            current.append(sql[i : end + 1])
            i = end + 1
            continue
        if ch == "$":
            close = sql.find("$", i + 1)
            tag = sql[i : close + 1] if close != -1 else ""
            if tag and (tag == "$$" or tag[1:-1].replace("_", "").isalnum()):
                end = sql.index(tag, close + 1) + len(tag)
                current.append(sql[i:end])
                i = end
                continue
        if ch == ";":
            statement = "".join(current).strip()
            if statement:
                statements.append(statement)
            current = []
            i += 1
            continue
        current.append(ch)
        i += 1
    tail = "".join(current).strip()
    if tail:
        statements.append(tail)
    return statements


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
