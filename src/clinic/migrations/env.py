"""Alembic environment: runs migrations on the URL given by ``clinic db`` (or the settings)."""

from __future__ import annotations

import asyncio
from typing import Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import async_engine_from_config

from clinic.core.schema import include_name
from clinic.models import metadata

config = context.config


def _render_item(type_: str, obj: object, autogen_context: AutogenContext) -> str | Literal[False]:
    """Render the project's column types as plain SQLAlchemy ones in new migrations."""
    from clinic.core.db import UTCDateTime

    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


# A migration that waits on a busy table fails fast instead of stalling the live release
# (every query of the live colour would queue behind its lock request); a runaway statement
# is stopped too. Both are set before any migration, online and in the offline SQL.
TIMEOUTS = (
    f"SET lock_timeout = '{config.attributes.get('lock_timeout', '5s')}'",
    f"SET statement_timeout = '{config.attributes.get('statement_timeout', '15min')}'",
)


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        compare_type=True,
        render_item=_render_item,
        include_name=include_name,
    )
    with context.begin_transaction():
        for statement in TIMEOUTS:
            context.execute(statement)
        context.run_migrations()


def _run(connection: Connection) -> None:
    for statement in TIMEOUTS:
        connection.exec_driver_sql(statement)
    connection.commit()  # end the implicit transaction so Alembic's own one commits
    context.configure(
        connection=connection,
        target_metadata=metadata,
        compare_type=True,
        render_item=_render_item,
        include_name=include_name,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = async_engine_from_config(
        config.get_section(config.config_ini_section, {}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    async with engine.connect() as conn:
        await conn.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
