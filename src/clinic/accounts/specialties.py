"""The managed list of specialties: admins edit it, doctors register with one of its names,
search offers exactly its names. One row per name, whatever its case."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import BigInteger, Identity, Index, String, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from clinic.accounts.guards import Actor, require_admin
from clinic.accounts.models import Doctor
from clinic.core.db import Base, UTCDateTime
from clinic.core.errors import Conflict, InvalidInput, NotFound

NAME_MAX = 100


class Specialty(Base):
    __tablename__ = "specialties"
    __table_args__ = (Index("uq_specialties_lower_name", func.lower(text("name")), unique=True),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_MAX))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("now()"))


@dataclass(frozen=True, slots=True)
class SpecialtyView:
    id: int
    name: str
    doctors: int
    """How many doctors (approved or not) have this specialty."""


def clean_name(name: str) -> str:
    """The name as stored: inner runs of spaces collapsed; refused when empty or too long."""
    cleaned = " ".join(name.split())
    if len(cleaned) < 2:
        raise InvalidInput("Give the specialty a name of at least 2 characters.", field="name")
    if len(cleaned) > NAME_MAX:
        raise InvalidInput(f"A specialty name is at most {NAME_MAX} characters.", field="name")
    return cleaned


async def specialty_names(session: AsyncSession) -> list[str]:
    """Every name on the list, alphabetically (inside the caller's transaction)."""
    return list(await session.scalars(select(Specialty.name).order_by(func.lower(Specialty.name))))


async def canonical_specialty(session: AsyncSession, name: str) -> str:
    """The list's spelling of ``name`` (any case); refused when it is not on the list."""
    found = await session.scalar(
        select(Specialty.name).where(func.lower(Specialty.name) == " ".join(name.split()).lower())
    )
    if found is None:
        raise InvalidInput("Choose a specialty from the list.", field="specialty")
    return found


async def list_specialties(*, session: AsyncSession) -> list[SpecialtyView]:
    """The list with each name's number of doctors (for anyone: names are public)."""
    async with session.begin():
        count = (
            select(func.count())
            .where(func.lower(Doctor.specialty) == func.lower(Specialty.name))
            .scalar_subquery()
        )
        rows = await session.execute(
            select(Specialty.id, Specialty.name, count).order_by(func.lower(Specialty.name))
        )
        return [SpecialtyView(i, n, c) for i, n, c in rows.all()]


async def _taken(session: AsyncSession, name: str, but: int | None = None) -> None:
    stmt = select(Specialty.name).where(func.lower(Specialty.name) == name.lower())
    if but is not None:
        stmt = stmt.where(Specialty.id != but)
    existing = await session.scalar(stmt)
    if existing is not None:
        raise Conflict(f"{existing} is already on the list.", field="name")


async def add_specialty(*, session: AsyncSession, actor: Actor | None, name: str) -> SpecialtyView:
    """An admin adds a name; a name that differs from one on the list only in case is refused."""
    require_admin(actor)
    name = clean_name(name)
    async with session.begin():
        # One admin's add waits for another's: the unique index is the last word, this the
        # message.
        await session.execute(text("LOCK TABLE specialties IN SHARE ROW EXCLUSIVE MODE"))
        await _taken(session, name)
        row = Specialty(name=name)
        session.add(row)
        await session.flush()
        return SpecialtyView(row.id, row.name, 0)


async def rename_specialty(
    *, session: AsyncSession, actor: Actor | None, specialty_id: int, name: str
) -> SpecialtyView:
    """An admin corrects a name; the doctors who have it follow the new spelling."""
    require_admin(actor)
    name = clean_name(name)
    async with session.begin():
        await session.execute(text("LOCK TABLE specialties IN SHARE ROW EXCLUSIVE MODE"))
        row = await session.get(Specialty, specialty_id)
        if row is None:
            raise NotFound("No such specialty.")
        await _taken(session, name, but=row.id)
        moved = await session.execute(
            update(Doctor)
            .where(func.lower(Doctor.specialty) == row.name.lower())
            .values(specialty=name)
            .returning(Doctor.user_id)
        )
        row.name = name
        return SpecialtyView(row.id, name, len(moved.all()))


async def remove_specialty(
    *, session: AsyncSession, actor: Actor | None, specialty_id: int
) -> None:
    """An admin removes a name no doctor has (a doctor's specialty is never left dangling)."""
    require_admin(actor)
    async with session.begin():
        row = await session.get(Specialty, specialty_id, with_for_update=True)
        if row is None:
            raise NotFound("No such specialty.")
        used = await session.scalar(
            select(func.count()).where(func.lower(Doctor.specialty) == row.name.lower())
        )
        if used:
            raise Conflict(
                f"{used} doctor(s) have {row.name}: rename it instead, or change their specialty"
                " first.",
                field="name",
            )
        await session.delete(row)


async def specialty_choices(*, session: AsyncSession) -> list[str]:
    """The names a registering doctor chooses from."""
    async with session.begin():
        return await specialty_names(session)
