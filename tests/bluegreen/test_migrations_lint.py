"""The migration lint's own rules, squawk, and the contract and rollback checks."""

from __future__ import annotations

import json

import pytest

from bluegreen.migrations import (
    DataDeclaration,
    Migration,
    Plan,
    ReleaseHead,
    check_contracts,
    declarations,
    lint,
    own_rules,
    rollback_blockers,
    split_statements,
)

# What Alembic's offline SQL looks like: one transaction, timeouts set first.
PRELUDE = "BEGIN;\nSET lock_timeout = '5s';\nSET statement_timeout = '60s';\n"


def mig(sql: str, *, phase: str = "expand", rev: str = "0002", **kw: object) -> Migration:
    sql = PRELUDE + sql + ";\nCOMMIT;"
    return Migration(revision=rev, down_revision="0001", phase=phase, sql=sql, **kw)  # type: ignore[arg-type]


def rules(m: Migration) -> list[str]:
    return [f.rule for f in own_rules(m)]


def test_split_respects_quotes_dollar_bodies_and_comments() -> None:
    sql = (
        "-- a comment; not a statement\n"
        "CREATE FUNCTION f() RETURNS trigger AS $$ BEGIN RAISE 'x;y'; END; $$ LANGUAGE plpgsql;\n"
        "INSERT INTO t VALUES ('it''s; fine');\nSELECT 1"
    )
    parts = split_statements(sql)
    assert len(parts) == 3
    assert parts[0].startswith("CREATE FUNCTION") and parts[0].endswith("plpgsql")
    assert parts[1] == "INSERT INTO t VALUES ('it''s; fine')"


@pytest.mark.parametrize(
    ("sql", "rule"),
    [
        ("DROP TABLE appointments", "drop-table"),
        ("ALTER TABLE appointments DROP COLUMN reason", "drop-column"),
        ("ALTER TABLE users RENAME COLUMN name TO full_name", "rename"),
        ("ALTER TABLE users RENAME TO people", "rename"),
        ("ALTER TABLE users ALTER COLUMN name TYPE TEXT", "change-type"),
        ("ALTER TABLE users ALTER COLUMN name SET NOT NULL", "set-not-null"),
        ("ALTER TABLE users ADD COLUMN nick TEXT NOT NULL", "add-not-null-without-default"),
        ("ALTER TABLE users DROP CONSTRAINT uq_users_email", "drop-constraint"),
        ("TRUNCATE users", "truncate"),
    ],
)
def test_destructive_change_in_expand_is_refused_and_allowed_in_contract(
    sql: str, rule: str
) -> None:
    assert rules(mig(sql)) == [rule]
    contract = mig(sql, phase="contract", removes=("x",), safe_after="0001")
    assert rules(contract) == []


@pytest.mark.parametrize(
    "sql",
    [
        "ALTER TABLE appointments ADD COLUMN visit_type TEXT",
        "ALTER TABLE appointments ADD COLUMN visit_type TEXT DEFAULT 'video' NOT NULL",
        "ALTER TABLE users ADD CONSTRAINT ck_name CHECK (name <> '') NOT VALID",
        "ALTER TABLE users VALIDATE CONSTRAINT ck_name",
        "CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT NOT NULL)",
        "CREATE INDEX CONCURRENTLY ix_users_name ON users (name)",
        "ALTER TABLE users ALTER COLUMN name DROP NOT NULL",
    ],
)
def test_expand_safe_changes_pass(sql: str) -> None:
    assert rules(mig(sql)) == []


def test_index_must_be_concurrent_on_an_existing_table_only() -> None:
    assert rules(mig("CREATE INDEX ix_users_name ON users (name)")) == ["index-not-concurrent"]
    fresh = (
        "CREATE TABLE notes (id BIGINT PRIMARY KEY, at TIMESTAMPTZ);\nCREATE INDEX ix ON notes (at)"
    )
    assert rules(mig(fresh)) == []


def test_timeouts_must_be_set_before_ddl() -> None:
    m = Migration("0002", "0001", "expand", "ALTER TABLE users ADD COLUMN x TEXT")
    assert rules(m) == ["missing-timeouts"]


def test_downgrade_and_contract_declarations_are_required() -> None:
    assert rules(mig("SELECT 1", has_downgrade=False)) == ["no-downgrade"]
    undeclared = mig("ALTER TABLE users DROP COLUMN x", phase="contract")
    assert rules(undeclared) == ["contract-undeclared"]


def test_finding_names_statement_rule_and_fix() -> None:
    (finding,) = own_rules(mig("ALTER TABLE appointments DROP COLUMN reason"))
    text = finding.render()
    assert "0002: [drop-column]" in text
    assert "ALTER TABLE appointments DROP COLUMN reason" in text
    assert "contract migration" in text


def test_squawk_findings_are_reported_with_their_statement() -> None:
    import sys
    from pathlib import Path

    exe = str(Path(sys.executable).parent / "squawk")
    bad = mig(
        "ALTER TABLE users ADD COLUMN nick TEXT DEFAULT 'x';\n"
        "ALTER TABLE users ADD CONSTRAINT fk FOREIGN KEY (nick) REFERENCES nicks (id)"
    )
    plan = Plan(current="0001", head="0002", history=("0001", "0002"), phases={}, revisions=(bad,))
    found = lint(plan, squawk_executable=exe)
    squawked = [f for f in found if f.rule.startswith("squawk:")]
    assert any(f.rule == "squawk:adding-foreign-key-constraint" for f in squawked), found
    assert all("FOREIGN KEY" in f.statement for f in squawked if "foreign" in f.rule)
    clean = Plan(
        current="0001",
        head="0002",
        history=("0001", "0002"),
        phases={},
        revisions=(mig("ALTER TABLE users ADD COLUMN nick TEXT"),),
    )
    assert lint(clean, squawk_executable=exe) == []


def _plan(
    *revisions: Migration, history: tuple[str, ...], phases: dict[str, str], current: str
) -> Plan:
    return Plan(
        current=current, head=history[-1], history=history, phases=phases, revisions=revisions
    )


def test_contract_refused_while_a_kept_release_still_uses_it() -> None:
    drop = mig(
        "ALTER TABLE users DROP COLUMN legacy",
        phase="contract",
        rev="0005",
        removes=("users.legacy",),
        safe_after="0004",
    )
    plan = _plan(drop, history=("0001", "0002", "0003", "0004", "0005"), phases={}, current="0004")
    live = ReleaseHead("r4", "0004", "live")
    old = ReleaseHead("r3", "0003", "kept for rollback")
    (refusal,) = check_contracts(plan, [live, old])
    assert refusal.needed_by == (old,)
    assert "r3 (kept for rollback, schema 0003)" in refusal.render()
    assert "users.legacy" in refusal.render()
    assert check_contracts(plan, [live, ReleaseHead("r4b", "0004")]) == []


def test_rollback_allowed_only_across_expand_migrations() -> None:
    history = ("0001", "0002", "0003", "0004")
    expand_only = _plan(history=history, phases={r: "expand" for r in history}, current="0004")
    assert rollback_blockers(expand_only, target_head="0002") == []
    with_contract = _plan(history=history, phases={"0003": "contract"}, current="0004")
    assert rollback_blockers(with_contract, target_head="0002") == [
        "0003 is a contract migration that release needs undone"
    ]
    assert rollback_blockers(with_contract, target_head="0003") == []
    # A contract whose safe_after the target release has reached does not block it.
    safe = Plan(
        current="0004",
        head="0004",
        history=history,
        phases={"0003": "contract"},
        revisions=(),
        safe_after={"0003": "0002"},
    )
    assert rollback_blockers(safe, target_head="0002") == []
    assert rollback_blockers(safe, target_head="0001") != []


def test_index_on_a_table_created_without_a_space_before_its_columns() -> None:
    sql = "CREATE TABLE jobs(id BIGINT PRIMARY KEY, q TEXT);\nCREATE INDEX jobs_q ON jobs(q)"
    assert rules(mig(sql)) == []
    assert rules(mig("CREATE INDEX users_q ON users(q)")) == ["index-not-concurrent"]


# -- data changes: unbounded-delete, unbounded-update, data-change-in-expand -------------

DELETE_APPOINTMENTS = {"table": "appointments", "change": "delete", "reason": "test rows"}


def declared(*entries: dict[str, str]) -> tuple[DataDeclaration, ...]:
    return tuple(DataDeclaration.from_json(e) for e in entries)


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM appointments",
        "DELETE FROM appointments WHERE true",
        "DELETE FROM public.appointments WHERE 1 = 1",
        "DELETE FROM appointments WHERE id = id",
        "DELETE FROM appointments WHERE (reason IS NULL OR reason IS NOT NULL)",
        "delete from only appointments a where not false returning a.id",
    ],
)
def test_unbounded_delete_is_refused_in_any_deploy_migration(sql: str) -> None:
    # In expand it is also an undeclared data change; declaring does not make it bounded.
    assert rules(mig(sql)) == ["unbounded-delete", "data-change-in-expand"]
    assert rules(mig(sql, data_changes=declared(DELETE_APPOINTMENTS))) == ["unbounded-delete"]
    contract = mig(sql, phase="contract", removes=("appointments.reason",), safe_after="0001")
    assert rules(contract) == ["unbounded-delete"]


def test_unbounded_delete_passes_in_a_contract_migration_that_names_the_rows() -> None:
    sql = "DELETE FROM appointments"
    kw: dict[str, object] = {"phase": "contract", "safe_after": "0001"}
    assert rules(mig(sql, removes=("appointments",), **kw)) == []
    by_declaration = mig(sql, removes=("x",), data_changes=declared(DELETE_APPOINTMENTS), **kw)
    assert rules(by_declaration) == []


def test_a_bounded_delete_in_expand_must_be_declared_with_a_reason() -> None:
    sql = "DELETE FROM idempotency_keys WHERE created_at < now() - interval '1 day'"
    assert rules(mig(sql)) == ["data-change-in-expand"]
    keys = {"table": "idempotency_keys", "change": "delete", "reason": "expired keys"}
    assert rules(mig(sql, data_changes=declared(keys))) == []
    # The declaration must name the right table and give a reason.
    assert rules(mig(sql, data_changes=declared(DELETE_APPOINTMENTS))) == ["data-change-in-expand"]
    no_reason = declared({"table": "idempotency_keys", "change": "delete", "reason": " "})
    assert rules(mig(sql, data_changes=no_reason)) == ["bad-data-changes", "data-change-in-expand"]
    # A contract migration may delete bounded sets without declaring.
    assert rules(mig(sql, phase="contract", removes=("x",), safe_after="0001")) == []


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE appointments SET reason = reason",
        "UPDATE appointments SET reason = reason WHERE 1 = 1",
        "UPDATE appointments SET reason_v2 = reason WHERE reason_v2 IS NULL",
        "UPDATE appointments SET reason_v2 = reason WHERE id > 0",
        "UPDATE appointments SET reason_v2 = reason WHERE id > 0 AND id <= 100000000",
        "UPDATE appointments SET x = 1 WHERE id IN (SELECT appointment_id FROM visits)",
        "UPDATE appointments SET x = 1 WHERE status = 'booked'",
    ],
)
def test_whole_table_update_is_refused(sql: str) -> None:
    assert rules(mig(sql)) == ["unbounded-update"]
    assert rules(mig(sql, phase="contract", removes=("x",), safe_after="0001")) == [
        "unbounded-update"
    ]


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE appointments SET reason_v2 = reason WHERE id > 0 AND id <= 1000 "
        "AND (reason_v2 IS NULL)",
        "UPDATE appointments AS a SET reason_v2 = a.reason WHERE a.id BETWEEN 1001 AND 2000",
        "UPDATE appointments SET reason = 'x' WHERE id = 42",
        "UPDATE weekly_hours SET end_time = '17:00' WHERE doctor_id IN (3, 4)",
        "UPDATE appointments SET x = 1 WHERE 2000 >= id AND id > 1000",
    ],
)
def test_bounded_update_passes(sql: str) -> None:
    assert rules(mig(sql)) == []


def test_data_rules_can_be_waived_by_the_migration_but_schema_rules_cannot() -> None:
    sql = "DELETE FROM appointments;\nALTER TABLE appointments DROP COLUMN reason"
    waived = mig(sql, lint_ignore=("unbounded-delete", "data-change-in-expand", "drop-column"))
    assert rules(waived) == ["drop-column"]
    small = mig("UPDATE doctors SET bio = ''", lint_ignore=("unbounded-update",))
    assert rules(small) == []


def test_declarations_are_shown_for_the_deploy_output() -> None:
    m = mig(
        "DELETE FROM appointments WHERE id = 7",
        data_changes=declared(DELETE_APPOINTMENTS),
        lint_ignore=("unbounded-update", "prefer-identity"),
    )
    plan = Plan(current="0001", head="0002", history=("0001", "0002"), phases={}, revisions=(m,))
    assert declarations(plan) == [
        "0002 declares a data change: delete on appointments: test rows",
        "0002 waives the lint rule unbounded-update (lint_ignore; the rehearsal still counts rows)",
    ]


def test_plan_json_carries_the_data_changes_declaration() -> None:
    text = json.dumps(
        {
            "current": "0001",
            "head": "0002",
            "history": ["0001", "0002"],
            "revisions": [
                {
                    "revision": "0002",
                    "down_revision": "0001",
                    "sql": "",
                    "data_changes": [DELETE_APPOINTMENTS, "not a mapping"],
                }
            ],
        }
    )
    (m,) = Plan.from_json(text).revisions
    assert m.declares("delete", "APPOINTMENTS")
    assert [f.rule for f in own_rules(m)] == ["bad-data-changes"]


def test_data_finding_names_statement_rule_and_safe_way() -> None:
    findings = own_rules(mig("DELETE FROM appointments"))
    text = "\n".join(f.render() for f in findings)
    assert "0002: [unbounded-delete] expand migration" not in text  # not an expand-only rule
    assert "0002: [unbounded-delete] deletes every row of appointments" in text
    assert "statement: DELETE FROM appointments" in text
    assert "safe way: remove rows in a contract migration that names them" in text
    assert "0002: [data-change-in-expand]" in text and "data_changes = [" in text
    (update,) = own_rules(mig("UPDATE appointments SET reason = reason"))
    assert "safe way: a batched backfill" in update.render()


def test_data_changes_inside_an_anonymous_code_block_are_linted_too() -> None:
    block = (
        "DO $$ BEGIN DELETE FROM appointments; "
        "IF true THEN UPDATE users SET name = 'x' WHERE id = 1; END IF; END $$"
    )
    assert rules(mig(block)) == ["unbounded-delete", "data-change-in-expand"]
    quiet = "DO $body$ BEGIN PERFORM pg_sleep(0); END $body$"
    assert rules(mig(quiet)) == []
