"""The batched backfill helper migrations use: bounded batches committed one by one, resumable
after a crash, its progress printed; in offline SQL the one-batch shape the deploy lint accepts."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.operations import Operations

from bluegreen.migrations import Migration, Plan, lint, own_rules, split_statements
from clinic.migrations.backfill import backfill

ROWS = 2500


class Crash(Exception):
    pass


@pytest.fixture
def conn(db_url: str) -> Iterator[sa.Connection]:
    engine = sa.create_engine(db_url.replace("+asyncpg", "+psycopg", 1))
    with engine.connect() as c:
        c.execute(sa.text("CREATE TABLE people (id BIGINT PRIMARY KEY, name TEXT, full_name TEXT)"))
        # Keys with gaps, and one row with nothing to copy (it stays to do forever).
        c.execute(
            sa.text(
                "INSERT INTO people (id, name) SELECT i * 3, 'name ' || i "
                "FROM generate_series(1, :n) AS i"
            ),
            {"n": ROWS},
        )
        c.execute(sa.text("UPDATE people SET name = NULL WHERE id = 30"))
        c.commit()
        yield c
    engine.dispose()


def migrate(conn: sa.Connection, **kw: object) -> object:
    """Run ``backfill`` the way a migration's ``upgrade()`` does: inside Alembic's
    transaction, with the project's timeouts set first."""
    conn.execute(sa.text("SET lock_timeout = '5s'"))
    conn.commit()  # as env.py does: Alembic's own transaction follows
    ctx = MigrationContext.configure(connection=conn)
    with Operations.context(ctx), ctx.begin_transaction():
        return backfill(
            "people",
            set_="full_name = upper(name)",
            todo="full_name IS NULL AND name IS NOT NULL",
            batch_size=400,
            pause=0,
            **kw,  # type: ignore[arg-type]
        )


def done(conn: sa.Connection) -> int:
    with conn.engine.connect() as other:  # what another session sees: committed rows only
        return int(
            other.execute(
                sa.text("SELECT count(*) FROM people WHERE full_name IS NOT NULL")
            ).scalar_one()
        )


def test_backfill_updates_every_row_in_bounded_committed_batches(conn: sa.Connection) -> None:
    lines: list[str] = []
    seen_midway: list[int] = []

    def log(line: str) -> None:
        lines.append(line)
        if "rows in" in line and "done" not in line:
            seen_midway.append(done(conn))

    result = migrate(conn, log=log, report_every=0)
    assert result is not None
    assert result.rows == ROWS - 1 and result.batches == 7  # 2499 rows, 400 per batch
    assert done(conn) == ROWS - 1
    assert conn.execute(sa.text("SELECT full_name FROM people WHERE id = 3")).scalar() == "NAME 1"
    # Another session saw the first batches committed while later ones were still to come.
    assert seen_midway[0] == 400 and seen_midway == sorted(seen_midway)
    assert lines[0].startswith("backfill people: starting")
    assert lines[-1].startswith(f"backfill people: done, {ROWS - 1} rows in 7 batches")


def test_backfill_resumes_where_a_crash_stopped_it(conn: sa.Connection) -> None:
    reports = 0

    def crash_after_three(line: str) -> None:
        nonlocal reports
        if "rows in" in line:
            reports += 1
            if reports == 3:
                raise Crash(line)

    with pytest.raises(Crash):
        migrate(conn, log=crash_after_three, report_every=0)
    assert done(conn) == 1200  # three batches committed, nothing rolled back
    conn.rollback()
    result = migrate(conn, log=lambda line: None)
    assert result is not None
    assert result.rows == ROWS - 1 - 1200  # only what was left
    assert done(conn) == ROWS - 1


def test_backfill_offline_sql_is_one_bounded_batch_the_lint_accepts() -> None:
    buffer = io.StringIO()
    ctx = MigrationContext.configure(
        dialect_name="postgresql", opts={"as_sql": True, "output_buffer": buffer}
    )
    with Operations.context(ctx), ctx.begin_transaction():
        assert (
            backfill("people", set_="full_name = name", todo="full_name IS NULL", batch_size=500)
            is None
        )
    sql = buffer.getvalue()
    assert "-- batched backfill of people: 500 rows per batch by id" in sql
    (update,) = [s for s in split_statements(sql) if s.startswith("UPDATE")]
    assert update == (
        "UPDATE people SET full_name = name WHERE id > 0 AND id <= 500 AND (full_name IS NULL)"
    )
    prelude = "SET lock_timeout = '5s';\nSET statement_timeout = '60s';\n"
    assert own_rules(Migration("0009", "0008", "expand", prelude + sql)) == []
    whole = prelude + "UPDATE people SET full_name = name WHERE full_name IS NULL;"  # noqa: S608
    assert [f.rule for f in own_rules(Migration("0009", "0008", "expand", whole))] == [
        "unbounded-update"
    ]


@pytest.mark.parametrize(
    ("kw", "why"),
    [({"todo": " "}, "todo must say"), ({"todo": "x", "batch_size": 50_000}, "batch_size")],
)
def test_backfill_refuses_a_missing_todo_or_a_batch_too_large(
    kw: dict[str, object], why: str
) -> None:
    ctx = MigrationContext.configure(dialect_name="postgresql", opts={"as_sql": True})
    with Operations.context(ctx), pytest.raises(ValueError, match=why):
        backfill("people", set_="a = b", **kw)  # type: ignore[arg-type]


FILL = """
CREATE OR REPLACE FUNCTION users_fill_full_name() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.full_name IS NULL OR (TG_OP = 'UPDATE' AND NEW.name IS DISTINCT FROM OLD.name
                                 AND NEW.full_name IS NOT DISTINCT FROM OLD.full_name) THEN
        NEW.full_name := NEW.name;
    END IF;
    RETURN NEW;
END $$"""


def test_the_rename_recipe_in_the_docs_passes_the_deploy_lint() -> None:
    """docs/migrations.md, "Rename a column", release A: its offline SQL, as the deploy's lint
    (squawk with the project's settings, and the project's rules) reads it."""
    buffer = io.StringIO()
    ctx = MigrationContext.configure(
        dialect_name="postgresql", opts={"as_sql": True, "output_buffer": buffer}
    )
    with Operations.context(ctx), ctx.begin_transaction():
        ctx.impl.static_output("SET lock_timeout = '5s';\nSET statement_timeout = '15min';")
        op = Operations(ctx)
        op.add_column("users", sa.Column("full_name", sa.Text()), if_not_exists=True)
        op.execute(FILL)
        op.execute(
            "CREATE OR REPLACE TRIGGER users_fill_full_name BEFORE INSERT OR UPDATE "
            "ON users FOR EACH ROW EXECUTE FUNCTION users_fill_full_name()"
        )
        backfill("users", set_="full_name = name", todo="full_name IS NULL AND name IS NOT NULL")
    sql = buffer.getvalue()
    assert "WHERE id > 0 AND id <= 1000 AND (full_name IS NULL AND name IS NOT NULL)" in sql
    m = Migration("0009", "0008", "expand", sql)
    plan = Plan(current="0008", head="0009", history=("0008", "0009"), phases={}, revisions=(m,))
    root = Path(__file__).resolve().parents[2]
    found = lint(
        plan,
        squawk_executable=str(Path(sys.executable).parent / "squawk"),
        squawk_config=root / ".squawk.toml",
    )
    assert found == [], "\n".join(f.render() for f in found)
