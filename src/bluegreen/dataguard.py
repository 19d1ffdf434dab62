"""The rehearsal's data check: no migration destroys rows the live release wrote.

The scratch database of the rehearsal has the live schema and no patient data. Before the new
release's migrations run there, it holds a *sample*: the smoke accounts' rows (copied by
``scratch_create``) and, with ``[migrations] sample_seed``, synthetic rows the **live**
release writes through its own code (its factories know the live schema). Row counts per
table are taken before and after the migrations; a table that lost rows fails the rehearsal
unless a contract migration declared it (``removes = ["<table>"]``, or ``data_changes`` with
``"change": "delete"`` for the table).

Pure comparison (:func:`compare`) plus two small I/O helpers (:func:`count_rows`,
:func:`parse_settings` for the configuration keys).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

from bluegreen.config import PLAN_PLACEHOLDERS, Template, _template
from bluegreen.migrations import Plan

KEYS = frozenset({"sample_seed"})
"""The ``[migrations]`` keys this module reads (``bluegreen.config`` allows them)."""


@dataclass(frozen=True, slots=True)
class DataGuardSettings:
    sample_seed: Template | None = None
    """Run with the live release on the scratch database before the migrations (its database
    env var set to the scratch URL): writes synthetic rows through the live release's code.
    Placeholders: ``{python}``, ``{release}``, ``{release_dir}``, ``{colour}``."""


def parse_settings(migrations: Mapping[str, Any]) -> DataGuardSettings:
    """The data check's settings from the ``[migrations]`` table (raises ``ConfigError``
    naming the key)."""
    seed = (
        _template(migrations, "migrations", "sample_seed", PLAN_PLACEHOLDERS)
        if "sample_seed" in migrations
        else None
    )
    return DataGuardSettings(sample_seed=seed)


def is_postgres(url: str) -> bool:
    return url.split("://", 1)[0].split("+", 1)[0] in ("postgresql", "postgres")


async def count_rows(url: str) -> dict[str, int]:
    """Rows per table (``schema.table``; ``table`` in ``public``) of the database at ``url``:
    exact counts, meant for a small sample."""
    scheme, rest = url.split("://", 1)
    conn = await asyncpg.connect(f"{scheme.split('+', 1)[0]}://{rest}")
    try:
        tables = await conn.fetch(
            "SELECT n.nspname AS schema, c.relname AS name FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition "
            "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1, 2"
        )
        counts = {}
        for t in tables:
            ident = f"{_quote(t['schema'])}.{_quote(t['name'])}"
            key = t["name"] if t["schema"] == "public" else f"{t['schema']}.{t['name']}"
            counts[key] = int(await conn.fetchval(f"SELECT count(*) FROM {ident}"))  # noqa: S608
        return counts
    finally:
        await conn.close()


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def declared_removals(plan: Plan | None) -> set[str]:
    """Tables whose rows a contract migration of ``plan`` says it removes."""
    if plan is None:
        return set()
    tables: set[str] = set()
    for m in plan.revisions:
        if m.phase != "contract":
            continue
        tables.update(r.lower() for r in m.removes if "." not in r)
        tables.update(d.table for d in m.data_changes if d.change == "delete" and d.reason)
    return tables


@dataclass(frozen=True, slots=True)
class Verdict:
    lost: dict[str, tuple[int, int]]
    """Tables that lost rows and no contract migration declared: (before, after)."""
    declared: dict[str, tuple[int, int]]
    """Tables that lost rows a contract migration declared."""
    tables: int
    rows: int

    @property
    def ok(self) -> bool:
        return not self.lost

    def summary(self) -> str:
        if self.lost:
            shown = ", ".join(f"{t} {b} -> {a}" for t, (b, a) in sorted(self.lost.items()))
            return (
                f"the migrations destroy data: {shown} rows on the sample "
                "(no contract migration declares removing them)"
            )
        line = f"data check: {self.rows} sample rows in {self.tables} tables, none lost"
        if self.declared:
            shown = ", ".join(f"{t} {b} -> {a}" for t, (b, a) in sorted(self.declared.items()))
            line += f" except as declared by a contract migration: {shown}"
        return line


def compare(before: Mapping[str, int], after: Mapping[str, int], plan: Plan | None) -> Verdict:
    """Which tables lost rows between ``before`` and ``after`` (a dropped table lost them
    all), split into undeclared and declared by a contract migration of ``plan``."""
    allowed = declared_removals(plan)
    lost: dict[str, tuple[int, int]] = {}
    declared: dict[str, tuple[int, int]] = {}
    for table, count in before.items():
        now = after.get(table, 0)
        if now < count:
            short = table.rsplit(".", 1)[-1].lower()
            (declared if table.lower() in allowed or short in allowed else lost)[table] = (
                count,
                now,
            )
    return Verdict(lost, declared, tables=len(before), rows=sum(before.values()))
