"""Running and inspecting Alembic migrations for a database URL."""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection


def alembic_config(
    url: str | None = None, *, lock_timeout: str = "5s", statement_timeout: str = "15min"
) -> Config:
    """Alembic configuration pointing at the packaged migrations (works from any directory)."""
    cfg = Config()
    cfg.attributes["lock_timeout"] = lock_timeout
    cfg.attributes["statement_timeout"] = statement_timeout
    cfg.set_main_option("script_location", str(Path(str(files("clinic") / "migrations"))))
    cfg.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head", *, lock_timeout: str = "5s") -> None:
    """Migrate the database at ``url`` to ``revision`` (blocking: from async code, use a thread)."""
    command.upgrade(alembic_config(url, lock_timeout=lock_timeout), revision)


def downgrade(url: str, revision: str, *, lock_timeout: str = "5s") -> None:
    command.downgrade(alembic_config(url, lock_timeout=lock_timeout), revision)


@lru_cache(maxsize=1)
def _script() -> ScriptDirectory:
    # The migrations shipped with this code never change while it runs: read them once.
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The newest revision this code knows: the schema it needs."""
    head = _script().get_current_head()
    if head is None:
        raise RuntimeError("no migrations found")
    return head


@lru_cache(maxsize=1)
def known_revisions() -> frozenset[str]:
    return frozenset(rev.revision for rev in _script().walk_revisions())


async def current_revision(conn: AsyncConnection) -> str | None:
    exists = await conn.scalar(text("SELECT to_regclass('alembic_version') IS NOT NULL"))
    if not exists:
        return None
    version = await conn.scalar(text("SELECT version_num FROM alembic_version LIMIT 1"))
    return str(version) if version is not None else None


def schema_is_recent_enough(current: str | None) -> bool:
    """True when the database is at or past this code's head.

    A revision this code does not know comes from a newer release (blue still running after
    green migrated): under expand/contract that schema still serves this release.
    """
    if current is None:
        return False
    if current == head_revision():
        return True
    # Known but not head means an ancestor of head: too old for this code.
    return current not in known_revisions()


EXTERNAL_PREFIXES = ("procrastinate_",)
"""Tables (and their indexes, types, functions) owned by a library's own schema SQL, applied
by a migration but not described by the clinic's models: autogenerate must leave them alone."""


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Alembic ``include_name`` hook: skip procrastinate's objects when comparing schemas."""
    if type_ in ("table", "index", "unique_constraint", "foreign_key_constraint") and name:
        return not name.startswith(EXTERNAL_PREFIXES) and not name.startswith("idx_procrastinate_")
    return True
