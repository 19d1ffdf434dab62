"""Schema changes that never break the live colour: the deploy-time migration lint and the
rules for contract migrations and rollbacks. Pure functions over a *plan*, which the app
describes (``[migrations] plan`` hook, e.g. ``clinic db plan --json``); squawk is the one
external tool, run on each migration's offline SQL.

The plan is JSON::

    {"current": "0001",                  # the database's revision (null: empty database)
     "head": "0003",                     # the release's newest revision
     "history": ["0001", "0002", "0003"],  # every revision the release knows, base first
     "phases": {"0001": "expand", ...},  # the phase of each revision in history
     "safe_after": {"0005": "0004"},     # each contract revision's safe_after
     "revisions": [                      # the ones this deploy would run, in order
        {"revision": "0002", "down_revision": "0001", "phase": "expand",
         "removes": [], "safe_after": null, "has_downgrade": true, "sql": "...",
         "lint_ignore": [], "data_changes": [           # optional
            {"table": "appointments", "change": "delete", "reason": "..."}]}]}

A revision is an *expand* migration unless it declares ``phase = "contract"``; a contract
migration names what it ``removes`` and the revision ``safe_after`` which no release reads it.
A migration that deletes rows declares it in ``data_changes``, with a reason.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlparse

from bluegreen.dml import MAX_BATCH_KEYS, data_changes, where_always_true, where_bounded
from bluegreen.errors import BluegreenError


class PlanError(BluegreenError):
    code = "bad_migration_plan"


DATA_CHANGE_KINDS = ("delete", "update")


@dataclass(frozen=True, slots=True)
class DataDeclaration:
    """A migration's own word that it changes rows: ``{"table", "change", "reason"}``."""

    table: str
    change: str
    reason: str

    @classmethod
    def from_json(cls, raw: object) -> DataDeclaration:
        if not isinstance(raw, Mapping):
            return cls("", "", str(raw))
        return cls(
            table=str(raw.get("table") or "").lower(),
            change=str(raw.get("change") or "").lower(),
            reason=str(raw.get("reason") or "").strip(),
        )

    def render(self) -> str:
        return f"{self.change} on {self.table}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Migration:
    revision: str
    down_revision: str | None
    phase: str
    sql: str
    removes: tuple[str, ...] = ()
    safe_after: str | None = None
    has_downgrade: bool = True
    lint_ignore: tuple[str, ...] = ()
    """squawk rules (and the data rules, :data:`IGNORABLE`) this migration is exempt from,
    each with its reason in the migration."""
    data_changes: tuple[DataDeclaration, ...] = ()
    """The rows it deletes or rewrites, declared with a reason (``data_changes = [...]``)."""

    def declares(self, change: str, table: str) -> bool:
        return any(
            d.change == change and d.table == table.lower() and d.reason for d in self.data_changes
        )


@dataclass(frozen=True, slots=True)
class Plan:
    current: str | None
    head: str | None
    history: tuple[str, ...]
    phases: Mapping[str, str]
    revisions: tuple[Migration, ...]
    safe_after: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, text: str) -> Plan:
        try:
            data = json.loads(text)
            revisions = tuple(
                Migration(
                    revision=str(r["revision"]),
                    down_revision=r.get("down_revision"),
                    phase=str(r.get("phase", "expand")),
                    sql=str(r.get("sql", "")),
                    removes=tuple(r.get("removes") or ()),
                    safe_after=r.get("safe_after"),
                    has_downgrade=bool(r.get("has_downgrade", True)),
                    lint_ignore=tuple(r.get("lint_ignore") or ()),
                    data_changes=tuple(
                        DataDeclaration.from_json(d) for d in r.get("data_changes") or ()
                    ),
                )
                for r in data.get("revisions", ())
            )
            return cls(
                current=data.get("current"),
                head=data.get("head"),
                history=tuple(data.get("history", ())),
                phases=dict(data.get("phases", {})),
                revisions=revisions,
                safe_after=dict(data.get("safe_after") or {}),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise PlanError(
                f"the migration plan is not valid JSON of the expected shape: {exc}"
            ) from exc


@dataclass(frozen=True, slots=True)
class Finding:
    """One lint failure: where, which rule, and how to write it safely."""

    revision: str
    rule: str
    statement: str
    message: str
    fix: str

    def render(self) -> str:
        stmt = " ".join(self.statement.split())
        if len(stmt) > 200:
            stmt = stmt[:197] + "..."
        return (
            f"{self.revision}: [{self.rule}] {self.message}\n"
            f"    statement: {stmt}\n"
            f"    safe way: {self.fix}"
        )


# -- SQL statements --------------------------------------------------------------------


def split_statements(sql: str) -> list[str]:
    """The statements of ``sql``, comments dropped (sqlparse respects quotes, dollar-quoted
    bodies and comments)."""
    out = []
    for statement in sqlparse.split(sql, strip_semicolon=True):
        text = sqlparse.format(statement, strip_comments=True).strip()
        if text:
            out.append(text)
    return out


def _norm(stmt: str) -> str:
    return " ".join(stmt.upper().split())


@dataclass(frozen=True, slots=True)
class _Rule:
    name: str
    pattern: re.Pattern[str]
    message: str
    fix: str


# Changes the previous release cannot live with: only in a contract migration.
DESTRUCTIVE: tuple[_Rule, ...] = (
    _Rule(
        "drop-table",
        re.compile(r"^DROP TABLE\b"),
        "drops a table the live release may read",
        "stop reading it in one release, then drop it in a contract migration two releases later",
    ),
    _Rule(
        "drop-column",
        re.compile(r"^ALTER TABLE .*\bDROP (COLUMN\b|(?!CONSTRAINT|DEFAULT|NOT)\w)"),
        "drops a column the live release may read or write",
        "stop using the column in one release, then drop it in a contract migration",
    ),
    _Rule(
        "rename",
        re.compile(r"^ALTER TABLE .*\bRENAME\b"),
        "renames a table or column the live release uses by its old name",
        "add the new column, dual-write, backfill, switch reads; drop the old one two "
        "releases later",
    ),
    _Rule(
        "change-type",
        re.compile(r"^ALTER TABLE .*\bALTER (COLUMN )?\S+ (SET DATA )?TYPE\b"),
        "changes a column's type under the live release",
        "add a new column of the new type, dual-write and backfill, switch reads, then drop "
        "the old",
    ),
    _Rule(
        "set-not-null",
        re.compile(r"^ALTER TABLE .*\bALTER (COLUMN )?\S+ SET NOT NULL\b"),
        "makes a column NOT NULL: inserts by the live release that omit it would fail",
        "add CHECK (col IS NOT NULL) NOT VALID, VALIDATE it, then SET NOT NULL once no "
        "release omits it",
    ),
    _Rule(
        "add-not-null-without-default",
        re.compile(r"^ALTER TABLE .*\bADD (COLUMN )?(?!CONSTRAINT)(?!.*\bDEFAULT\b).*\bNOT NULL\b"),
        "adds a NOT NULL column without a default: the live release's inserts would fail",
        "add it nullable or with a DEFAULT; tighten later",
    ),
    _Rule(
        "drop-constraint",
        re.compile(r"^ALTER TABLE .*\bDROP CONSTRAINT\b"),
        "drops a constraint other code may rely on",
        "drop constraints only in a contract migration, once no release relies on them",
    ),
    _Rule(
        "truncate",
        re.compile(r"^TRUNCATE\b"),
        "deletes every row of a table",
        "never in a deploy migration; move data in a backfill the live release tolerates",
    ),
)

_DDL = re.compile(r"^(CREATE|ALTER|DROP|COMMENT|TRUNCATE|UPDATE|INSERT|DELETE)\b")
_CREATE_INDEX = re.compile(
    r"^CREATE (UNIQUE )?INDEX\b(?! CONCURRENTLY)(?:.*?) ON (?:ONLY )?([^\s(]+)"
)
_CREATE_TABLE = re.compile(r"^CREATE (?:UNLOGGED )?TABLE (?:IF NOT EXISTS )?([^\s(]+)")


def own_rules(m: Migration) -> list[Finding]:
    """The project's rules for one migration (squawk covers the general ones)."""
    findings: list[Finding] = []
    statements = split_statements(m.sql)
    if m.phase not in ("expand", "contract"):
        findings.append(
            Finding(
                m.revision,
                "unknown-phase",
                f"phase = {m.phase!r}",
                "a migration's phase is 'expand' or 'contract'",
                'declare phase = "expand" (the default) or phase = "contract"',
            )
        )
    if m.phase == "contract" and (not m.removes or not m.safe_after):
        findings.append(
            Finding(
                m.revision,
                "contract-undeclared",
                "(module attributes)",
                "a contract migration must name what it removes and since when no release reads it",
                'set removes = ["table.column", ...] and safe_after = "<revision>"',
            )
        )
    if not m.has_downgrade:
        findings.append(
            Finding(
                m.revision,
                "no-downgrade",
                "def downgrade(): pass",
                "without a working downgrade the deploy cannot undo it if the live release fails",
                "write downgrade() so it reverses upgrade()",
            )
        )
    seen_lock = seen_stmt = False
    created: set[str] = set()
    for stmt in statements:
        s = _norm(stmt)
        if s.startswith("SET LOCK_TIMEOUT") or s.startswith("SET LOCAL LOCK_TIMEOUT"):
            seen_lock = True
        if s.startswith("SET STATEMENT_TIMEOUT") or s.startswith("SET LOCAL STATEMENT_TIMEOUT"):
            seen_stmt = True
        if (t := _CREATE_TABLE.match(s)) is not None:
            created.add(t.group(1).strip('"').lower())
        if _DDL.match(s) and not (seen_lock and seen_stmt):
            findings.append(
                Finding(
                    m.revision,
                    "missing-timeouts",
                    stmt,
                    "DDL runs without lock_timeout and statement_timeout set",
                    "run migrations through the project's env.py, which sets both first",
                )
            )
            seen_lock = seen_stmt = True  # report once per migration
        if (ix := _CREATE_INDEX.match(s)) is not None and ix.group(2).strip(
            '"'
        ).lower() not in created:
            findings.append(
                Finding(
                    m.revision,
                    "index-not-concurrent",
                    stmt,
                    "builds an index on an existing table while holding a write lock",
                    "op.create_index(..., postgresql_concurrently=True) inside "
                    "op.get_context().autocommit_block()",
                )
            )
        if m.phase == "expand":
            for rule in DESTRUCTIVE:
                if rule.pattern.search(s):
                    findings.append(
                        Finding(
                            m.revision,
                            rule.name,
                            stmt,
                            f"expand migration {rule.message}",
                            rule.fix,
                        )
                    )
                    break
    findings += data_rules(m, statements)
    return [f for f in findings if not (f.rule in IGNORABLE and f.rule in m.lint_ignore)]


# -- data changes ----------------------------------------------------------------------

IGNORABLE = frozenset({"unbounded-delete", "unbounded-update", "data-change-in-expand"})
"""Own rules a migration may opt out of with ``lint_ignore`` (and a reason in its source):
the rehearsal's row counts still catch rows it destroys. The schema rules are never waived."""

BOOKKEEPING = frozenset({"alembic_version"})
"""Tables the migration tool itself updates, one row each: not data."""

BATCH_FIX = (
    "a batched backfill: key ranges of at most {n} rows (WHERE id > :lo AND id <= :hi), "
    "each its own short transaction outside the migration's, resumable "
    "(docs/migrations.md, 'Backfill in batches')"
)


def data_rules(m: Migration, statements: Sequence[str]) -> list[Finding]:
    """``unbounded-delete``, ``unbounded-update`` and ``data-change-in-expand`` for one
    migration's statements, plus the shape of its ``data_changes`` declaration."""
    findings = [
        Finding(
            m.revision,
            "bad-data-changes",
            f"data_changes entry {d.render()!r}",
            "a data_changes entry names a table, a change (delete or update) and a reason",
            'data_changes = [{"table": "appointments", "change": "delete", "reason": "why"}]',
        )
        for d in m.data_changes
        if not d.table or d.change not in DATA_CHANGE_KINDS or not d.reason
    ]
    changes = [(stmt, c) for stmt in statements for c in data_changes(stmt)]
    for stmt, change in changes:
        if change.table in BOOKKEEPING:
            continue
        unbounded = where_always_true(change)
        if change.kind == "DELETE" and unbounded and not _contract_removes(m, change.table):
            findings.append(
                Finding(
                    m.revision,
                    "unbounded-delete",
                    stmt,
                    f"deletes every row of {change.table or 'a table'} (no WHERE, or one "
                    "that is always true)",
                    "remove rows in a contract migration that names them (removes = "
                    '["<table>"] or data_changes = [{"table": ..., "change": "delete", '
                    '"reason": ...}]), or in a data job outside the deploy',
                )
            )
        if (
            change.kind == "DELETE"
            and m.phase == "expand"
            and not m.declares("delete", change.table)
        ):
            findings.append(
                Finding(
                    m.revision,
                    "data-change-in-expand",
                    stmt,
                    f"expand migration deletes rows of {change.table or 'a table'} without "
                    "declaring it",
                    f'declare it: data_changes = [{{"table": "{change.table}", "change": '
                    '"delete", "reason": "why these rows may go"}]; the deploy shows it',
                )
            )
        if change.kind == "UPDATE" and (unbounded or not where_bounded(change)):
            what = "every row" if unbounded else "rows with no key bound (a whole-table backfill)"
            findings.append(
                Finding(
                    m.revision,
                    "unbounded-update",
                    stmt,
                    f"rewrites {what} of {change.table or 'a table'} in one statement: it holds "
                    "their row locks until it ends, while the live release writes",
                    BATCH_FIX.format(n=MAX_BATCH_KEYS),
                )
            )
    return findings


def _contract_removes(m: Migration, table: str) -> bool:
    """A contract migration that names the table's rows as what it removes."""
    return m.phase == "contract" and (
        table.lower() in (r.lower() for r in m.removes) or m.declares("delete", table)
    )


def declarations(plan: Plan) -> list[str]:
    """What the migrations declare about the data they change and the lint rules they
    waive, one line each, for the deploy output."""
    lines = [
        f"{m.revision} declares a data change: {d.render()}"
        for m in plan.revisions
        for d in m.data_changes
    ]
    lines += [
        f"{m.revision} waives the lint rule {rule} (lint_ignore; the rehearsal still counts rows)"
        for m in plan.revisions
        for rule in m.lint_ignore
        if rule in IGNORABLE
    ]
    return lines


# -- squawk ----------------------------------------------------------------------------


def squawk(
    migrations: Sequence[Migration], *, executable: str = "squawk", config: Path | None = None
) -> list[Finding]:
    """Run squawk on each migration's SQL; every finding it reports fails the lint."""
    findings: list[Finding] = []
    with tempfile.TemporaryDirectory(prefix="bluegreen-lint-") as tmp:
        paths: dict[str, Migration] = {}
        for m in migrations:
            path = Path(tmp) / f"{m.revision}.sql"
            path.write_text(m.sql)
            paths[str(path)] = m
        if not paths:
            return []
        cmd = [
            executable,
            "--reporter",
            "json",
            *(["--config", str(config)] if config else []),
            *paths,
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        except FileNotFoundError as exc:
            raise BluegreenError(
                f"squawk is not installed ({executable}): pip install squawk-cli"
            ) from exc
        try:
            reported: list[dict[str, Any]] = json.loads(proc.stdout or "[]")
        except ValueError as exc:
            raise BluegreenError(
                f"squawk failed: {proc.stderr.strip() or proc.stdout[:500]}"
            ) from exc
        for item in reported:
            found = paths.get(str(item.get("file")))
            if found is None or item.get("rule_name") in found.lint_ignore:
                continue
            m = found
            lines = m.sql.splitlines()
            line = int(item.get("line", 0)) + 1  # squawk counts lines from 0
            findings.append(
                Finding(
                    revision=m.revision,
                    rule=f"squawk:{item.get('rule_name', '?')}",
                    statement=_statement_at(m.sql, line)
                    or (lines[line - 1] if 0 < line <= len(lines) else ""),
                    message=str(item.get("message", "")),
                    fix=str(item.get("help") or "see https://squawkhq.com/docs/rules"),
                )
            )
    return findings


def _statement_at(sql: str, line: int) -> str:
    """The statement containing 1-based ``line`` of ``sql``."""
    offset = sum(len(x) + 1 for x in sql.splitlines()[: line - 1])
    pos = 0
    for stmt in split_statements(sql):
        start = sql.find(stmt, pos)
        if start < 0:
            continue
        end = start + len(stmt)
        pos = end
        if start <= offset <= end + 1:
            return stmt
    return ""


def lint(
    plan: Plan, *, squawk_executable: str = "squawk", squawk_config: Path | None = None
) -> list[Finding]:
    """Everything wrong with the migrations this deploy would run."""
    findings = [f for m in plan.revisions for f in own_rules(m)]
    findings += squawk(plan.revisions, executable=squawk_executable, config=squawk_config)
    return findings


# -- contracts and rollbacks -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReleaseHead:
    release: str
    head: str | None
    why: str = "kept for rollback"


@dataclass(frozen=True, slots=True)
class ContractRefusal:
    revision: str
    removes: tuple[str, ...]
    needed_by: tuple[ReleaseHead, ...] = field(default_factory=tuple)

    def render(self) -> str:
        who = ", ".join(f"{r.release} ({r.why}, schema {r.head or 'none'})" for r in self.needed_by)
        return (
            f"contract migration {self.revision} removes {', '.join(self.removes)}, "
            f"which these releases still use: {who}"
        )


def check_contracts(plan: Plan, releases: Iterable[ReleaseHead]) -> list[ContractRefusal]:
    """A contract migration is allowed only when every release that may run (the live one and
    those kept for rollback) is at or past its ``safe_after`` revision."""
    order = {rev: i for i, rev in enumerate(plan.history)}
    releases = list(releases)
    refusals = []
    for m in plan.revisions:
        if m.phase != "contract" or m.safe_after is None:
            continue
        limit = order.get(m.safe_after)
        needing = tuple(
            r
            for r in releases
            if limit is None or r.head is None or r.head not in order or order[r.head] < limit
        )
        if needing:
            refusals.append(ContractRefusal(m.revision, m.removes, needing))
    return refusals


def rollback_blockers(plan: Plan, *, target_head: str | None) -> list[str]:
    """Why a release whose schema head is ``target_head`` cannot run on the current schema:
    the contract migrations applied since that remove something it still uses (its head is
    before their ``safe_after``). Empty when the rollback is safe."""
    order = {rev: i for i, rev in enumerate(plan.history)}
    if plan.current is None or target_head == plan.current:
        return []
    if plan.current not in order:
        return [f"the database is at {plan.current}, which the live release does not know"]
    start = -1 if target_head is None else order.get(target_head)
    if start is None:
        return [f"release schema {target_head} is not in the migration history"]
    blockers = []
    for rev in plan.history[start + 1 : order[plan.current] + 1]:
        if plan.phases.get(rev) != "contract":
            continue
        safe = plan.safe_after.get(rev)
        if safe is not None and safe in order and order[safe] <= start:
            continue  # it removes only what the target release no longer uses
        blockers.append(f"{rev} is a contract migration that release needs undone")
    return blockers
