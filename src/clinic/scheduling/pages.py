"""HTML pages for doctors and schedules: search, a doctor's week of free slots, the editor."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.datastructures import FormData

from clinic.accounts.deps import CurrentActor, PageActor, page_actor_back_to
from clinic.accounts.guards import Actor
from clinic.core.db import utcnow
from clinic.core.errors import ClinicError, InvalidInput
from clinic.core.validation import Id, PageDay, Text
from clinic.scheduling import service, specialty_routes
from clinic.scheduling.schemas import OverrideIn, ScheduleIn
from clinic.web.deps import CsrfChecked, Session, SettingsDep
from clinic.web.pages import (
    clinic_errors,
    flash,
    page,
    redirect,
    text,
    validation_errors,
)
from clinic.web.render import viewer_zone

router = APIRouter(include_in_schema=False)

BackToSchedule = Annotated[Actor, page_actor_back_to("/schedule")]

MIN_ROWS = 14
"""Rows of the weekly-hours table: the existing windows plus blanks, at least this many."""
MAX_ROWS = 70
RULE_FIELDS = ("slot_minutes", "buffer_minutes", "min_notice_minutes", "horizon_days")


def monday_of(day: date) -> date:
    return day - timedelta(days=day.weekday())


def local_midnight(day: date, zone: ZoneInfo) -> datetime:
    """The UTC instant the local ``day`` starts in ``zone``."""
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def parse_day(value: str | None, name: str, default: date) -> date:
    if not value:
        return default
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{name} must be a date like 2026-03-02.", field=name) from None


def _tz_query(request: Request) -> dict[str, str]:
    """Keep an anonymous viewer's ``?tz=`` on links between pages."""
    tz = request.query_params.get("tz")
    return {"tz": tz} if tz and getattr(request.state, "actor", None) is None else {}


def monday_url(doctor_id: int, monday: date, request: Request) -> str:
    return f"/doctors/{doctor_id}?" + urlencode({"week": monday.isoformat(), **_tz_query(request)})


@router.get("/doctors")
async def search(
    request: Request,
    actor: CurrentActor,
    session: Session,
    specialty: Text | None = Query(default=None, max_length=100),
    name: Text | None = Query(default=None, max_length=200),
) -> Response:
    """Bookable doctors by specialty and name, with each one's next free slot."""
    zone = viewer_zone(request)
    found = await service.search_doctors(
        session=session, actor=actor, specialty=specialty, name=name, now=utcnow()
    )
    results = [
        {
            "calendar": cal,
            "next_free": nxt,
            "url": monday_url(
                cal.user.id,
                monday_of(nxt.astimezone(zone).date() if nxt else utcnow().astimezone(zone).date()),
                request,
            ),
        }
        for cal, nxt in found
    ]
    return page(
        request,
        "scheduling/search.html",
        specialties=await service.specialties(session=session),
        specialty=specialty or "",
        name=name or "",
        results=results,
        tz=_tz_query(request).get("tz", ""),
    )


@dataclass(frozen=True, slots=True)
class DayColumn:
    day: date
    slots: list[tuple[datetime, str]]
    """(start, booking-page URL) of each free slot starting that local day."""


@router.get("/doctors/{doctor_id}")
async def doctor_week(
    doctor_id: Id,
    request: Request,
    actor: CurrentActor,
    session: Session,
    settings: SettingsDep,
    week: Annotated[PageDay, Query()] = None,
) -> Response:
    """A doctor's free slots in one week (Monday to Sunday in the viewer's zone)."""
    zone = viewer_zone(request)
    monday = monday_of(parse_day(week, "week", utcnow().astimezone(zone).date()))
    start, end = local_midnight(monday, zone), local_midnight(monday + timedelta(days=7), zone)
    calendar, free = await service.doctor_slots(
        session=session,
        actor=actor,
        doctor_id=doctor_id,
        start=start,
        end=end,
        now=utcnow(),
        max_days=settings.max_slot_range_days,
    )
    days = [monday + timedelta(days=i) for i in range(7)]
    by_day: dict[date, list[tuple[datetime, str]]] = {d: [] for d in days}
    for slot in free:
        local_day = slot.starts_at.astimezone(zone).date()
        query = {"doctor_id": str(doctor_id), "starts_at": slot.starts_at.isoformat()}
        by_day.setdefault(local_day, []).append((slot.starts_at, "/book?" + urlencode(query)))
    return page(
        request,
        "scheduling/doctor.html",
        calendar=calendar,
        columns=[DayColumn(d, by_day[d]) for d in days],
        monday=monday,
        prev_url=monday_url(doctor_id, monday - timedelta(days=7), request),
        next_url=monday_url(doctor_id, monday + timedelta(days=7), request),
        this_url=monday_url(doctor_id, monday_of(utcnow().astimezone(zone).date()), request),
        today=utcnow().astimezone(zone).date(),
        free_count=len(free),
    )


# ---------------------------------------------------------------- the schedule editor


def _rows_of(calendar: service.DoctorCalendar) -> list[dict[str, str]]:
    rows = [
        {"weekday": str(w.weekday), "start": f"{w.start_time:%H:%M}", "end": f"{w.end_time:%H:%M}"}
        for w in calendar.weekly
    ]
    return _pad(rows)


def _pad(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    blanks = max(MIN_ROWS - len(rows), 3)
    return rows + [{"weekday": "", "start": "", "end": ""} for _ in range(blanks)]


def _rules_of(calendar: service.DoctorCalendar) -> dict[str, str]:
    return {k: str(v) for k, v in service.rules_in(calendar).model_dump().items()}


async def _schedule_page(
    request: Request,
    session: Session,
    actor: Actor,
    *,
    status_code: int = 200,
    errors: dict[str, str] | None = None,
    rows: list[dict[str, str]] | None = None,
    rules: dict[str, str] | None = None,
    override: dict[str, str] | None = None,
) -> Response:
    now = utcnow()
    calendar = await service.get_schedule(session=session, actor=actor, doctor_id=actor.user_id)
    outside = await service.appointments_outside_hours(
        session=session, actor=actor, calendar=calendar, now=now
    )
    return page(
        request,
        "scheduling/schedule.html",
        status_code,
        calendar=calendar,
        doctor_zone=calendar.user.time_zone,
        rows=rows if rows is not None else _rows_of(calendar),
        rules=rules if rules is not None else _rules_of(calendar),
        override=override or {"day": "", "kind": "off", "start": "", "end": ""},
        outside=[(a, a.patient_name) for a in outside],
        errors=errors or {},
    )


@router.get("/schedule")
async def schedule(request: Request, actor: PageActor, session: Session) -> Response:
    """The doctor's weekly hours, slot rules and date overrides."""
    return await _schedule_page(request, session, actor)


def _form_rows(form: FormData) -> list[dict[str, str]]:
    try:
        count = min(int(text(form, "rows") or "0"), MAX_ROWS)
    except ValueError:
        count = 0
    return [{k: text(form, f"{k}_{i}") for k in ("weekday", "start", "end")} for i in range(count)]


def _schedule_errors(exc: ValidationError, used: list[int]) -> dict[str, str]:
    """Map ``weekly.<n>.<field>`` (n: index among non-blank rows) to the table's row."""
    rename: dict[str, str] = {"": "weekly"}
    for n, row in enumerate(used):
        rename[f"weekly.{n}"] = f"row_{row}"
        for k in ("weekday", "start", "end"):
            rename[f"weekly.{n}.{k}"] = f"{k}_{row}"
    for k in RULE_FIELDS:
        rename[f"rules.{k}"] = k
    errors = validation_errors(exc, rename, default="weekly")
    for key in errors:
        if key.startswith("weekday_"):
            errors[key] = "Choose a day for this row."
    return errors


@router.post("/schedule", dependencies=[CsrfChecked])
async def save_schedule(request: Request, actor: BackToSchedule, session: Session) -> Response:
    """Replace weekly hours and rules; booked appointments now outside them are kept."""
    form = await request.form()
    rows = _form_rows(form)
    rules = {k: text(form, k) for k in RULE_FIELDS}
    used = [i for i, r in enumerate(rows) if r["start"] or r["end"]]
    payload = {
        "weekly": [
            {"weekday": rows[i]["weekday"], "start": rows[i]["start"], "end": rows[i]["end"]}
            for i in used
        ],
        "rules": rules,
    }
    try:
        data = ScheduleIn.model_validate(payload)
        _, outside = await service.save_schedule(
            session=session, actor=actor, doctor_id=actor.user_id, data=data, now=utcnow()
        )
    except ValidationError as exc:
        return await _schedule_page(
            request,
            session,
            actor,
            status_code=422,
            errors=_schedule_errors(exc, used),
            rows=rows,
            rules=rules,
        )
    except ClinicError as exc:
        return await _schedule_page(
            request,
            session,
            actor,
            status_code=exc.status,
            errors=clinic_errors(exc, "weekly"),
            rows=rows,
            rules=rules,
        )
    message = "Your schedule is saved."
    if outside:
        message += (
            f" {len(outside)} booked appointment(s) now fall outside your hours; they are kept."
            " Contact these patients (listed below)."
        )
    flash(request, message)
    return redirect("/schedule")


@router.post("/schedule/overrides", dependencies=[CsrfChecked])
async def add_override(request: Request, actor: BackToSchedule, session: Session) -> Response:
    """A day off, fewer hours on a day, or extra hours on a day."""
    form = await request.form()
    values = {k: text(form, k) for k in ("day", "kind", "start", "end")}
    payload: dict[str, Any] = {k: v or None for k, v in values.items()}
    try:
        data = OverrideIn.model_validate(payload)
        _, outside = await service.add_override(
            session=session, actor=actor, doctor_id=actor.user_id, data=data, now=utcnow()
        )
    except ValidationError as exc:
        rename = {"": "override", **{k: f"override_{k}" for k in values}}
        return await _schedule_page(
            request,
            session,
            actor,
            status_code=422,
            errors=validation_errors(exc, rename, default="override"),
            override=values,
        )
    except ClinicError as exc:
        return await _schedule_page(
            request,
            session,
            actor,
            status_code=exc.status,
            errors={"override": exc.message},
            override=values,
        )
    message = "The date override is added."
    if outside:
        message += (
            f" {len(outside)} booked appointment(s) now fall outside your hours; they are kept."
        )
    flash(request, message)
    return redirect("/schedule")


@router.post("/schedule/overrides/{override_id}/delete", dependencies=[CsrfChecked])
async def delete_override(
    override_id: Id, request: Request, actor: BackToSchedule, session: Session
) -> Response:
    await service.delete_override(
        session=session, actor=actor, doctor_id=actor.user_id, override_id=override_id
    )
    flash(request, "The date override is removed.")
    return redirect("/schedule")


router.include_router(specialty_routes.pages)
