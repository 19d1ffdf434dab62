"""Job queue (procrastinate's schema), email outbox and dedupe keys, append-only audit trail.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 08:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from clinic.notify.schema import PROCRASTINATE_DROP_SQL, procrastinate_statements

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# procrastinate's own schema (applied verbatim) uses bigserial; our tables use identities.
lint_ignore = ["prefer-identity"]


APPEND_ONLY_FUNCTION = """
CREATE FUNCTION audit_records_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_records is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$
"""


def upgrade() -> None:
    # procrastinate's own schema, frozen at the version the code was written against (a copy
    # of its sql/schema.sql): a later procrastinate upgrade ships its delta SQL as a new
    # clinic migration, so a fresh database and an upgraded one end up the same.
    # One statement at a time: asyncpg prepares each, and a prepared statement is one command.
    for statement in procrastinate_statements():
        op.execute(sa.text(statement))

    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("dedupe_key", sa.String(length=200), nullable=False),
        sa.Column("recipient", sa.String(length=254), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("ics", sa.Text(), nullable=True),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
    )
    op.create_index(op.f("ix_outbox_created_at"), "outbox", ["created_at"], unique=False)
    op.create_table(
        "sent_emails",
        sa.Column("dedupe_key", sa.String(length=200), nullable=False),
        sa.Column("recipient", sa.String(length=254), nullable=False),
        sa.Column("transport", sa.String(length=16), nullable=False),
        sa.Column(
            "sent_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("dedupe_key", name=op.f("pk_sent_emails")),
    )
    op.create_table(
        "reminders_sent",
        sa.Column("appointment_id", sa.BigInteger(), nullable=False),
        sa.Column("rule", sa.String(length=32), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "sent_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["appointment_id"],
            ["appointments.id"],
            name=op.f("fk_reminders_sent_appointment_id_appointments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "appointment_id", "rule", "starts_at", name=op.f("pk_reminders_sent")
        ),
    )
    op.create_table(
        "audit_records",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("actor_id", sa.BigInteger(), nullable=True),
        sa.Column("actor_role", sa.String(length=16), nullable=False),
        sa.Column("patient_id", sa.BigInteger(), nullable=True),
        sa.Column("action", sa.String(length=8), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=True),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.CheckConstraint(
            "action IN ('read', 'create', 'update', 'delete')",
            name=op.f("ck_audit_records_action_known"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_records")),
    )
    op.create_index(
        "ix_audit_records_patient_at", "audit_records", ["patient_id", "at"], unique=False
    )
    op.create_index("ix_audit_records_actor_at", "audit_records", ["actor_id", "at"], unique=False)
    op.create_index(op.f("ix_audit_records_at"), "audit_records", ["at"], unique=False)
    # Append-only is enforced by the database, not by the code: the app usually connects as
    # the table's owner (a superuser in the embedded setup), which privileges do not stop, so
    # triggers refuse UPDATE, DELETE and TRUNCATE for everyone but a role that disables them.
    op.execute(APPEND_ONLY_FUNCTION)
    op.execute(
        "CREATE TRIGGER audit_records_no_update_delete BEFORE UPDATE OR DELETE ON audit_records "
        "FOR EACH ROW EXECUTE FUNCTION audit_records_append_only()"
    )
    op.execute(
        "CREATE TRIGGER audit_records_no_truncate BEFORE TRUNCATE ON audit_records "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_records_append_only()"
    )
    # For deployments where the app connects as a non-owner role: belt and braces.
    op.execute("REVOKE UPDATE, DELETE, TRUNCATE ON audit_records FROM PUBLIC")


def downgrade() -> None:
    op.execute("DROP TRIGGER audit_records_no_truncate ON audit_records")
    op.execute("DROP TRIGGER audit_records_no_update_delete ON audit_records")
    op.execute("DROP FUNCTION audit_records_append_only()")
    op.drop_index(op.f("ix_audit_records_at"), table_name="audit_records")
    op.drop_index("ix_audit_records_actor_at", table_name="audit_records")
    op.drop_index("ix_audit_records_patient_at", table_name="audit_records")
    op.drop_table("audit_records")
    op.drop_table("reminders_sent")
    op.drop_table("sent_emails")
    op.drop_index(op.f("ix_outbox_created_at"), table_name="outbox")
    op.drop_table("outbox")
    op.execute(sa.text(PROCRASTINATE_DROP_SQL))
