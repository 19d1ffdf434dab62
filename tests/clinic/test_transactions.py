"""Each change to an appointment is one use case in one transaction: booking, rescheduling
and cancelling each open exactly one (counted with SQLAlchemy's ``after_begin`` event), and
the services they call take that transaction's session instead of opening their own."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import SessionTransaction

from clinic.app import compose_features
from clinic.appointments import service
from clinic.appointments.models import Appointment
from clinic.core.audit import AuditRecord
from clinic.core.errors import SlotTaken
from factories import make_doctor, make_patient, next_weekday_at


@pytest.fixture(autouse=True)
def composed() -> None:
    compose_features()  # what create_app does: appointments tell scheduling their booked time


@contextmanager
def counting_transactions(session: AsyncSession) -> Iterator[list[SessionTransaction]]:
    begun: list[SessionTransaction] = []

    def after_begin(_session: object, transaction: SessionTransaction, _connection: object) -> None:
        if not transaction.nested:  # a SAVEPOINT is part of the transaction, not another one
            begun.append(transaction)

    event.listen(session.sync_session, "after_begin", after_begin)
    try:
        yield begun
    finally:
        event.remove(session.sync_session, "after_begin", after_begin)


async def test_booking_replay_reschedule_and_cancel_each_open_one_transaction(
    sessions, settings
) -> None:
    doctor = await make_doctor(sessions, settings)
    patient = await make_patient(sessions, settings)
    starts_at, later = next_weekday_at(10), next_weekday_at(11)
    book = {
        "actor": patient,
        "doctor_id": doctor.user_id,
        "starts_at": starts_at,
        "reason": "checkup",
        "idempotency_key": "key-1",
    }
    async with sessions() as s:
        with counting_transactions(s) as begun:
            view, created = await service.book_appointment(session=s, **book)
    assert created and len(begun) == 1
    appointment_id = view.appointment.id

    async with sessions() as s:
        with counting_transactions(s) as begun:
            replay, created = await service.book_appointment(session=s, **book)
    assert not created and replay.appointment.id == appointment_id and len(begun) == 1

    async with sessions() as s:
        with counting_transactions(s) as begun:
            moved = await service.reschedule_appointment(
                session=s,
                actor=patient,
                appointment_id=appointment_id,
                starts_at=later,
                settings=settings,
            )
    assert moved.appointment.starts_at == later and len(begun) == 1

    async with sessions() as s:
        with counting_transactions(s) as begun:
            cancelled = await service.cancel_appointment(
                session=s,
                actor=patient,
                appointment_id=appointment_id,
                reason=None,
                settings=settings,
            )
    assert cancelled.appointment.status == "cancelled" and len(begun) == 1

    # Everything each change did committed with it: emails (2 per change) and audit records.
    async with sessions() as s:
        jobs = await s.scalar(
            text("SELECT count(*) FROM procrastinate_jobs WHERE task_name = :t"),
            {"t": "clinic.notify.send_email"},
        )
        actions = list(
            await s.scalars(
                select(AuditRecord.action)
                .where(AuditRecord.subject == f"appointment:{appointment_id}")
                .order_by(AuditRecord.id)
            )
        )
    assert jobs == 6
    assert actions == ["create", "read", "update", "update"]


async def test_a_refused_booking_opens_one_transaction_and_leaves_nothing(
    sessions, settings
) -> None:
    doctor = await make_doctor(sessions, settings)
    first, second = await make_patient(sessions, settings), await make_patient(sessions, settings)
    starts_at = next_weekday_at(10)
    async with sessions() as s:
        await service.book_appointment(
            session=s,
            actor=first,
            doctor_id=doctor.user_id,
            starts_at=starts_at,
            reason="x",
            idempotency_key=None,
        )
    async with sessions() as s:
        with counting_transactions(s) as begun, pytest.raises(SlotTaken):
            await service.book_appointment(
                session=s,
                actor=second,
                doctor_id=doctor.user_id,
                starts_at=starts_at,
                reason="x",
                idempotency_key="k",
            )
    assert len(begun) == 1
    async with sessions() as s:
        assert await s.scalar(select(func.count()).select_from(Appointment)) == 1
