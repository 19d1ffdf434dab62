"""Backfill in batches, from inside a migration: the way to rewrite rows of a table the live
release is writing to (docs/migrations.md, "Backfill in batches").

``backfill()`` runs outside the migration's DDL transaction (Alembic's ``autocommit_block``)
and updates the rows that still need it in bounded batches keyed on the primary key, each
batch one short transaction of its own, with a pause between batches so the live release's
writes go first. It keeps no state of its own: ``todo`` names the rows still to do, so after
a crash (or a ``lock_timeout``) the same migration run again starts at the first row still to
do. It prints its progress, which the deploy shows in the migrate step's output.

In Alembic's offline SQL (``clinic db plan``, what the deploy's lint reads) it writes the shape
of one batch, ``UPDATE … WHERE id > 0 AND id <= <batch> AND (<todo>)``: a bounded key range,
which the lint accepts where it refuses a whole-table ``UPDATE``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from alembic import op

DEFAULT_BATCH = 1000
DEFAULT_PAUSE = 0.05
MAX_BATCH = 10_000  # the widest key range the deploy's lint accepts as one batch


@dataclass(frozen=True, slots=True)
class BackfillResult:
    table: str
    rows: int
    batches: int
    seconds: float
    longest_batch: float
    """The longest a batch held its row locks (its transaction's duration), in seconds."""
    median_batch: float


def _say(line: str) -> None:
    print(line, flush=True)  # the migrate hook's stdout is the deploy's migrate output


def backfill(
    table: str,
    *,
    set_: str,
    todo: str,
    key: str = "id",
    batch_size: int = DEFAULT_BATCH,
    pause: float = DEFAULT_PAUSE,
    report_every: float = 5.0,
    log: Callable[[str], None] = _say,
) -> BackfillResult | None:
    """``UPDATE table SET <set_>`` for the rows where ``todo`` holds, ``batch_size`` rows at a
    time in ascending ``key`` order, each batch committed on its own, ``pause`` seconds apart.

    ``todo`` must turn false once a row is done (e.g. ``set_="full_name = name"``,
    ``todo="full_name IS NULL AND name IS NOT NULL"``): it is what makes the backfill
    resumable. Call it from ``upgrade()``; returns None in offline (``--sql``) mode.
    """
    if not todo.strip():
        raise ValueError("backfill: todo must say which rows still need the change")
    if not 0 < batch_size <= MAX_BATCH:
        raise ValueError(f"backfill: batch_size must be between 1 and {MAX_BATCH}")
    ctx = op.get_context()
    prep = ctx.dialect.identifier_preparer
    tbl, col = prep.quote(table), prep.quote(key)
    # The migration's author writes set_ and todo, as they would write the UPDATE itself.
    batch_sql = f"UPDATE {tbl} SET {set_} WHERE {col} > :lo AND {col} <= :hi AND ({todo})"  # noqa: S608
    with ctx.autocommit_block():
        if ctx.as_sql:
            ctx.impl.static_output(
                f"-- batched backfill of {table}: {batch_size} rows per batch by {key}, each "
                f"its own transaction, {pause:g}s apart, until no row matches ({todo}); "
                "the first batch:"
            )
            op.execute(batch_sql.replace(":lo", "0").replace(":hi", str(batch_size)))
            return None
        return _run(
            ctx.bind,
            table=table,
            key_name=key,
            next_sql=(
                f"SELECT max(k) FROM (SELECT {col} AS k FROM {tbl} WHERE {col} > :lo "  # noqa: S608
                f"AND ({todo}) ORDER BY {col} LIMIT :n) AS batch"
            ),
            batch_sql=batch_sql,
            batch_size=batch_size,
            pause=pause,
            report_every=report_every,
            log=log,
        )


def _run(
    conn: sa.Connection | None,
    *,
    table: str,
    key_name: str,
    next_sql: str,
    batch_sql: str,
    batch_size: int,
    pause: float,
    report_every: float,
    log: Callable[[str], None],
) -> BackfillResult:
    assert conn is not None, "backfill() runs inside a migration"
    started = last_report = time.monotonic()
    lo = -(2**63)  # below every key: the first batch starts at the first row still to do
    rows = batches = 0
    times: list[float] = []
    log(f"backfill {table}: starting, {batch_size} rows per batch")
    while True:
        # Each statement commits on its own (autocommit): the key lookup takes no row lock,
        # the UPDATE holds its batch's row locks only until it returns.
        hi = conn.execute(sa.text(next_sql), {"lo": lo, "n": batch_size}).scalar()
        if hi is None:
            break
        t0 = time.monotonic()
        done = conn.execute(sa.text(batch_sql), {"lo": lo, "hi": hi}).rowcount
        times.append(time.monotonic() - t0)
        rows += max(done, 0)
        batches += 1
        lo = int(hi)
        now = time.monotonic()
        if now - last_report >= report_every:
            log(
                f"backfill {table}: {rows} rows in {batches} batches, "
                f"up to {key_name} {lo}, {now - started:.1f}s"
            )
            last_report = now
        if pause > 0:
            time.sleep(pause)
    took = time.monotonic() - started
    longest = max(times, default=0.0)
    log(
        f"backfill {table}: done, {rows} rows in {batches} batches, {took:.1f}s "
        f"(longest batch {longest * 1000:.0f} ms)"
    )
    return BackfillResult(table, rows, batches, took, longest, statistics.median(times or [0.0]))
