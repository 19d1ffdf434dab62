"""The rehearsal's data check: row counts of a sample before and after the migrations, on a
real PostgreSQL, with real hook processes (a seed and a migrate script)."""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bluegreen import dataguard, rehearsal
from bluegreen.config import Config, parse_config
from bluegreen.errors import ConfigError, StepFailed
from bluegreen.migrations import DataDeclaration, Migration, Plan
from bluegreen.release import Release
from clinic.core.embedded import EmbeddedPostgres

# The live release's sample seed: writes rows through "its own code".
SEED = """
import asyncio, os, asyncpg
async def main():
    c = await asyncpg.connect(os.environ["APP_DB"])
    await c.execute("INSERT INTO notes (body) SELECT 'n' || i FROM generate_series(1, 5) i")
    await c.close()
    print("seeded 5 notes")
asyncio.run(main())
"""

# The new release's migration: runs whatever SQL the test put in MIGRATION_SQL.
MIGRATE = """
import asyncio, os, asyncpg
async def main():
    c = await asyncpg.connect(os.environ["APP_DB"])
    await c.execute(os.environ["MIGRATION_SQL"])
    await c.close()
asyncio.run(main())
"""


@pytest.fixture
async def scratch(pg: EmbeddedPostgres) -> AsyncIterator[str]:
    """A fresh database with the "live schema": smoke users (copied) and empty notes."""
    name = f"g_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(pg.url())
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = pg.url(name)
    conn = await asyncpg.connect(url)
    await conn.execute(
        "CREATE TABLE users (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, email TEXT);"
        "INSERT INTO users (email) VALUES ('smoke-patient@x'), ('smoke-doctor@x');"
        "CREATE TABLE notes (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, body TEXT);"
        "CREATE SCHEMA audit; CREATE TABLE audit.events (id BIGINT);"
    )
    await conn.close()
    yield url
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


def config(tmp: Path, *, seed: bool = True) -> Config:
    (tmp / "seed.py").write_text(SEED)
    (tmp / "migrate.py").write_text(MIGRATE)
    migrations: dict[str, Any] = {"plan": "{python} plan"}
    if seed:
        migrations["sample_seed"] = f"{{python}} {tmp / 'seed.py'}"
    return parse_config(
        {
            "app": {"name": "t", "command": "{python} app.py --port {port}"},
            "hooks": {"migrate": f"{{python}} {tmp / 'migrate.py'}"},
            "database": {"url_command": "{python} url", "env": "APP_DB"},
            "migrations": migrations,
            "state": {"dir": str(tmp / "var")},
        },
        path=tmp / "bluegreen.toml",
        root=tmp,
        environ={},
    )


def release(tmp: Path, name: str) -> Release:
    d = tmp / name
    d.mkdir(exist_ok=True)
    return Release(id=name, dir=d, python=Path(sys.executable), deps_hash="h", source="x", venv=tmp)


def plan_of(*revisions: Migration) -> Plan:
    return Plan(
        current="0001", head="0002", history=("0001", "0002"), phases={}, revisions=revisions
    )


def migration(phase: str = "expand", **kw: Any) -> Migration:
    return Migration("0002", "0001", phase, "", **kw)


async def rehearse_on(tmp: Path, url: str, sql: str, plan: Plan, *, seed: bool = True) -> str:
    lines: list[str] = []

    def env_for(rel: Release, colour: str) -> dict[str, str]:
        return {"MIGRATION_SQL": sql, "RELEASE": rel.id}

    await rehearsal.rehearse_on(
        url,
        config=config(tmp, seed=seed),
        new=release(tmp, "new"),
        new_colour="green",
        live=release(tmp, "live"),
        live_colour="blue",
        env_for=env_for,  # type: ignore[arg-type]
        runner=None,  # type: ignore[arg-type]  # no smoke hook: no instance is started
        instance_id="r",
        lines=lines,
        plan=plan,
    )
    return "\n".join(lines)


async def test_count_rows_counts_every_table_of_every_schema(scratch: str) -> None:
    counts = await dataguard.count_rows(scratch.replace("postgresql://", "postgresql+asyncpg://"))
    assert counts == {"audit.events": 0, "notes": 0, "users": 2}


async def test_a_migration_that_deletes_sampled_rows_fails_the_rehearsal(
    tmp_path: Path, scratch: str
) -> None:
    with pytest.raises(StepFailed) as caught:
        await rehearse_on(tmp_path, scratch, "DELETE FROM notes", plan_of(migration()))
    assert caught.value.message == (
        "the migration would destroy the live release's data: notes 5 -> 0 rows"
    )
    out = caught.value.output
    assert "sample on the scratch database (smoke accounts and the live release's" in out
    assert "7 rows in 2 of 3 tables" in out
    assert "new release's migrations applied to the scratch database" in out
    assert out.endswith("(no contract migration declares removing them)")


async def test_smoke_rows_alone_are_a_sample_too(tmp_path: Path, scratch: str) -> None:
    with pytest.raises(StepFailed, match="users 2 -> 1 rows"):
        await rehearse_on(
            tmp_path, scratch, "DELETE FROM users WHERE id = 1", plan_of(migration()), seed=False
        )


async def test_dropping_a_table_loses_its_rows(tmp_path: Path, scratch: str) -> None:
    with pytest.raises(StepFailed, match="notes 5 -> 0 rows"):
        await rehearse_on(tmp_path, scratch, "DROP TABLE notes", plan_of(migration()))


async def test_only_a_contract_migration_may_declare_the_loss(tmp_path: Path, scratch: str) -> None:
    declared = (DataDeclaration("notes", "delete", "notes moved to the archive"),)
    # Declared in an expand migration: the lint accepts the DELETE, the rehearsal does not.
    with pytest.raises(StepFailed, match="notes 5 -> 0 rows"):
        await rehearse_on(
            tmp_path, scratch, "DELETE FROM notes", plan_of(migration(data_changes=declared))
        )


async def test_contract_declared_loss_passes_and_is_shown(tmp_path: Path, scratch: str) -> None:
    declared = (DataDeclaration("notes", "delete", "notes moved to the archive"),)
    contract = migration("contract", removes=("x",), safe_after="0001", data_changes=declared)
    out = await rehearse_on(tmp_path, scratch, "DELETE FROM notes", plan_of(contract))
    assert "0002 declares a data change: delete on notes: notes moved to the archive" in out
    assert "none lost except as declared by a contract migration: notes 5 -> 0" in out


async def test_additive_migration_passes(tmp_path: Path, scratch: str) -> None:
    sql = "ALTER TABLE notes ADD COLUMN kind TEXT; INSERT INTO notes (body) VALUES ('more')"
    out = await rehearse_on(tmp_path, scratch, sql, plan_of(migration()))
    assert "data check: 7 sample rows in 3 tables, none lost" in out.splitlines()


async def test_a_failing_sample_seed_fails_the_rehearsal(tmp_path: Path, scratch: str) -> None:
    conn = await asyncpg.connect(scratch)
    await conn.execute("DROP TABLE notes")
    await conn.close()
    with pytest.raises(StepFailed, match="could not seed the sample data"):
        await rehearse_on(tmp_path, scratch, "SELECT 1", plan_of(migration()))


def test_compare_is_pure() -> None:
    before = {"a": 3, "b": 2, "c": 0, "s.d": 4}
    after = {"a": 3, "b": 1, "s.d": 0, "e": 9}
    contract = migration("contract", removes=("d", "b.col"), safe_after="0001")
    verdict = dataguard.compare(before, after, plan_of(contract))
    assert verdict.lost == {"b": (2, 1)}  # "b.col" is a column, not b's rows
    assert verdict.declared == {"s.d": (4, 0)}
    assert not verdict.ok and dataguard.compare(before, before, None).ok


def test_sample_seed_is_validated_with_the_config(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    assert dataguard.parse_settings(cfg.raw["migrations"]).sample_seed is not None
    with pytest.raises(ConfigError, match=r"migrations.sample_seed: unknown placeholder \{url\}"):
        dataguard.parse_settings({"sample_seed": "{python} seed {url}"})
    with pytest.raises(ConfigError, match=r"migrations\.sample_seed: expected a command string"):
        parse_config(
            {
                "app": {"name": "t", "command": "{python} app.py --port {port}"},
                "migrations": {"plan": "{python} plan", "sample_seed": 3},
            },
            path=tmp_path / "b.toml",
            root=tmp_path,
            environ={},
        )
