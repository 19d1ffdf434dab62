"""The project's own migrations pass the deploy lint, and every one of them can be undone."""

from __future__ import annotations

import sys
from pathlib import Path

from sqlalchemy import text

from bluegreen.migrations import Plan, lint
from clinic.core import schema
from clinic.core.migration_plan import plan

ROOT = Path(__file__).resolve().parents[2]
SQUAWK = str(Path(sys.executable).parent / "squawk")


def test_every_migration_in_the_repository_passes_the_lint() -> None:
    data = plan("postgresql+asyncpg://offline/clinic", None)
    revisions = [r["revision"] for r in data["revisions"]]
    assert revisions == data["history"] and revisions[0] == "0001"
    import json

    findings = lint(
        Plan.from_json(json.dumps(data)),
        squawk_executable=SQUAWK,
        squawk_config=ROOT / ".squawk.toml",
    )
    assert findings == [], "\n".join(f.render() for f in findings)
    for r in data["revisions"]:
        assert r["has_downgrade"], f"{r['revision']} has no working downgrade"
        assert "SET lock_timeout" in r["sql"] and "SET statement_timeout" in r["sql"]


async def test_all_migrations_downgrade_and_upgrade_again(db_url: str, engine) -> None:
    """Down to an empty schema and back up: each downgrade really reverses its upgrade."""
    import asyncio

    await asyncio.to_thread(schema.downgrade, db_url, "base")
    async with engine.connect() as conn:
        tables = await conn.scalar(
            text(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
                " AND tablename <> 'alembic_version'"
            )
        )
        assert tables == 0
    await asyncio.to_thread(schema.upgrade, db_url)
    async with engine.connect() as conn:
        assert await schema.current_revision(conn) == schema.head_revision()
