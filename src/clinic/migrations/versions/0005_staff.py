"""Staff: the managed list of specialties, and the admins' decisions on doctor sign-ups.

Expand only: a new table, filled with a starter list and with every specialty doctors already
have, one row per name whatever its case ("dermatology" and "Dermatology" become one, spelled
as most doctors spell it, capitalised). Doctors then take the list's spelling, in batches by
key; an older release reads any spelling, so it keeps working throughout.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 05:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from clinic.migrations.backfill import backfill

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STARTER = (
    "Cardiology",
    "Dermatology",
    "Endocrinology",
    "Gastroenterology",
    "General practice",
    "Gynaecology",
    "Neurology",
    "Ophthalmology",
    "Orthopaedics",
    "Pediatrics",
    "Psychiatry",
    "Pulmonology",
    "Urology",
)

# The list's spelling of a doctor's specialty (compared trimmed, inner spaces collapsed).
_CANONICAL = (
    "(SELECT s.name FROM specialties s WHERE lower(s.name) = "
    "lower(btrim(regexp_replace(doctors.specialty, '\\s+', ' ', 'g'))))"
)


def upgrade() -> None:
    op.create_table(
        "specialties",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_specialties")),
        if_not_exists=True,  # the backfill below commits on its own: rerunnable throughout
    )
    op.create_index(
        "uq_specialties_lower_name",
        "specialties",
        [sa.text("lower(name)")],
        unique=True,
        if_not_exists=True,
    )
    # Existing spellings first (the most used one wins, all-lower-case ones capitalised), then
    # the starter names no doctor has yet.
    op.execute(
        "INSERT INTO specialties (name) "
        "SELECT DISTINCT ON (lower(s)) "
        "CASE WHEN s = lower(s) THEN upper(left(s, 1)) || substr(s, 2) ELSE s END "
        "FROM (SELECT btrim(regexp_replace(specialty, '\\s+', ' ', 'g')) AS s, count(*) AS n "
        "FROM doctors GROUP BY 1) AS spellings "
        "WHERE length(s) >= 2 "
        "ORDER BY lower(s), (s = lower(s)), n DESC, s "
        "ON CONFLICT (lower(name)) DO NOTHING"
    )
    starter = ", ".join("('" + name + "')" for name in STARTER)
    op.execute(
        f"INSERT INTO specialties (name) VALUES {starter} "  # noqa: S608 - constants above
        "ON CONFLICT (lower(name)) DO NOTHING"
    )
    op.create_table(
        "doctor_reviews",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("doctor_id", sa.BigInteger(), nullable=False),
        sa.Column("admin_id", sa.BigInteger(), nullable=True),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), server_default="", nullable=False),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.CheckConstraint(
            "decision IN ('approved', 'rejected', 'info_requested')",
            name=op.f("ck_doctor_reviews_decision_known"),
        ),
        sa.ForeignKeyConstraint(
            ["doctor_id"],
            ["users.id"],
            name=op.f("fk_doctor_reviews_doctor_id_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["admin_id"],
            ["users.id"],
            name=op.f("fk_doctor_reviews_admin_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_doctor_reviews")),
        if_not_exists=True,
    )
    op.create_index(
        op.f("ix_doctor_reviews_doctor_id"), "doctor_reviews", ["doctor_id"], if_not_exists=True
    )
    backfill(
        "doctors",
        key="user_id",
        set_=f"specialty = {_CANONICAL}",
        todo=f"specialty <> {_CANONICAL}",
        batch_size=1000,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_doctor_reviews_doctor_id"), table_name="doctor_reviews")
    op.drop_table("doctor_reviews")
    op.drop_index("uq_specialties_lower_name", table_name="specialties")
    op.drop_table("specialties")
