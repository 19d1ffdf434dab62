"""The schema comes only from migrations, and the models agree with it."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from clinic.core.schema import head_revision, include_name, schema_is_recent_enough
from clinic.models import metadata


async def test_models_match_migrated_schema(engine) -> None:
    def diff(sync_conn):  # type: ignore[no-untyped-def]
        ctx = MigrationContext.configure(
            sync_conn, opts={"compare_type": True, "include_name": include_name}
        )
        return compare_metadata(ctx, metadata)

    async with engine.connect() as conn:
        changes = await conn.run_sync(diff)
    assert changes == []


def test_readiness_rule() -> None:
    assert schema_is_recent_enough(head_revision())
    assert schema_is_recent_enough("f00dfeed")  # a newer release's revision
    assert not schema_is_recent_enough(None)


async def test_health_and_version(http, engine) -> None:
    assert (await http.get("/healthz/live")).json() == {"status": "ok"}
    ready = await http.get("/healthz/ready")
    assert ready.status_code == 200 and ready.json()["schema"] == head_revision()
    from sqlalchemy import text

    async with engine.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = 'base0'"))
    # 'base0' is unknown here, so it counts as newer; delete the row to make it too old.
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM alembic_version"))
    not_ready = await http.get("/healthz/ready")
    assert not_ready.status_code == 503 and not_ready.json()["reason"] == "schema too old"
    v = (await http.get("/version")).json()
    assert v["release"] == "dev" and "color" in v
