"""Emails about appointments, composed without I/O: text in each recipient's own zone, an
iCalendar file (stable UID, increasing SEQUENCE, times in UTC) and a deterministic Message-ID.

A composed email is plain data (:class:`Email`), so it travels as a job's arguments and is
turned into an :class:`email.message.EmailMessage` only when sent.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import default as _default_policy
from email.utils import format_datetime, parseaddr
from typing import Any, Literal
from zoneinfo import ZoneInfo

from icalendar import Calendar, Event, vCalAddress, vText

from clinic.appointments.notices import AppointmentFacts, Change, Recipient
from clinic.core.wallclock import utc_offset
from clinic.web.identity import ClinicPublic

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


@dataclass(frozen=True, slots=True)
class Email:
    """A composed email: everything needed to send it, JSON-serialisable."""

    dedupe_key: str
    to: str
    to_name: str
    subject: str
    body: str
    message_id: str
    date: str
    ics: str | None = None
    ics_method: str | None = None
    appointment_id: int | None = None
    starts_at: str | None = None
    """Set on reminders: the send is skipped unless the appointment is still booked then."""

    def as_args(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> Email:
        return cls(**args)


def local_time(value: datetime, zone: str) -> str:
    """``Tuesday 3 March 2026, 09:30 (Europe/Berlin, UTC+01:00)``: no locale involved."""
    local = value.astimezone(ZoneInfo(zone))
    return (
        f"{WEEKDAYS[local.weekday()]} {local.day} {MONTHS[local.month - 1]} {local.year}, "
        f"{local:%H:%M} ({zone}, {utc_offset(local)})"
    )


def local_date(value: datetime, zone: str) -> str:
    """``Tuesday 3 March 2026`` in ``zone``."""
    local = value.astimezone(ZoneInfo(zone))
    return f"{WEEKDAYS[local.weekday()]} {local.day} {MONTHS[local.month - 1]} {local.year}"


def local_hours(starts_at: datetime, ends_at: datetime, zone: str) -> str:
    """``09:30–10:00 (Europe/Berlin, UTC+01:00)``: the time of day in ``zone``, named."""
    start = starts_at.astimezone(ZoneInfo(zone))
    return f"{start:%H:%M}–{ends_at.astimezone(ZoneInfo(zone)):%H:%M} ({zone}, {utc_offset(start)})"


def signature(clinic: ClinicPublic | None) -> list[str]:
    """The closing lines: who writes, how to reach them, and what to do in an emergency."""
    if clinic is None:
        return ["Clinic"]
    return [clinic.name, clinic.address, f"Phone: {clinic.phone}", "", clinic.emergency_notice]


def mail_domain(mail_from: str) -> str:
    address = parseaddr(mail_from)[1]
    return address.rpartition("@")[2] or "clinic.invalid"


def uid(appointment_id: int, domain: str) -> str:
    """The calendar UID: one per appointment, the same in every email about it."""
    return f"appointment-{appointment_id}@{domain}"


def _message_id(dedupe_key: str, domain: str) -> str:
    return f"<{re.sub(r'[^A-Za-z0-9.-]', '.', dedupe_key)}@{domain}>"


def calendar(
    facts: AppointmentFacts,
    *,
    method: Literal["REQUEST", "CANCEL"],
    role: Recipient,
    mail_from: str,
    stamp: datetime,
) -> str:
    """The .ics for one recipient; DTSTART/DTEND in UTC, SEQUENCE = the appointment's."""
    domain = mail_domain(mail_from)
    other = facts.doctor if role == "patient" else facts.patient
    me = facts.patient if role == "patient" else facts.doctor
    cal = Calendar()
    cal.add("prodid", "-//Clinic//Appointments//EN")
    cal.add("version", "2.0")
    cal.add("method", method)
    event = Event()
    event.add("uid", uid(facts.id, domain))
    event.add("sequence", facts.sequence)
    event.add("dtstamp", stamp.astimezone(UTC))
    event.add("dtstart", facts.starts_at.astimezone(UTC))
    event.add("dtend", facts.ends_at.astimezone(UTC))
    event.add("summary", f"Appointment with {other.name}")
    event.add("status", "CANCELLED" if method == "CANCEL" else "CONFIRMED")
    organizer = vCalAddress(f"mailto:{parseaddr(mail_from)[1]}")
    organizer.params["cn"] = vText("Clinic")
    event.add("organizer", organizer)
    attendee = vCalAddress(f"mailto:{me.email}")
    attendee.params["cn"] = vText(me.name)
    event.add("attendee", attendee)
    cal.add_component(event)
    return str(cal.to_ical().decode("utf-8"))


_HEADLINES: dict[Change, str] = {
    "booked": "Appointment booked",
    "rescheduled": "Appointment moved",
    "cancelled": "Appointment cancelled",
}


def appointment_email(
    facts: AppointmentFacts,
    *,
    change: Change,
    role: Recipient,
    mail_from: str,
    stamp: datetime,
    previous_start: datetime | None = None,
    clinic: ClinicPublic | None = None,
) -> Email:
    """The email to the patient or the doctor about a booking, move or cancellation: the
    date, the time in the recipient's own zone, the doctor (and for the doctor, the patient),
    no internal ids."""
    me = facts.patient if role == "patient" else facts.doctor
    when = local_time(facts.starts_at, me.time_zone)
    minutes = int((facts.ends_at - facts.starts_at).total_seconds() // 60)
    headline = _HEADLINES[change]
    lines = [
        f"Hello {me.name},",
        "",
        f"{headline}.",
        "",
        f"Date: {local_date(facts.starts_at, me.time_zone)}",
        f"Time: {local_hours(facts.starts_at, facts.ends_at, me.time_zone)}",
        f"Length: {minutes} minutes",
        f"Doctor: {facts.doctor.name}",
    ]
    if role == "doctor":
        lines.append(f"Patient: {facts.patient.name}")
    if previous_start is not None:
        lines.append(f"Before: {local_time(previous_start, me.time_zone)}")
    lines += [
        "",
        "The attached calendar file "
        + ("removes it from your calendar." if change == "cancelled" else "updates your calendar."),
        "",
        *signature(clinic),
    ]
    method: Literal["REQUEST", "CANCEL"] = "CANCEL" if change == "cancelled" else "REQUEST"
    domain = mail_domain(mail_from)
    key = f"appointment:{facts.id}:v{facts.sequence}:{change}:{role}"
    return Email(
        dedupe_key=key,
        to=me.email,
        to_name=me.name,
        subject=f"{headline}: {when}",
        body="\n".join(lines) + "\n",
        message_id=_message_id(key, domain),
        date=stamp.astimezone(UTC).isoformat(),
        ics=calendar(facts, method=method, role=role, mail_from=mail_from, stamp=stamp),
        ics_method=method,
        appointment_id=facts.id,
    )


def rule_name(offset: timedelta) -> str:
    """``24h``, ``1h``, ``90m``, ``45s``: the stable name of a reminder rule."""
    seconds = int(offset.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def reminder_email(
    facts: AppointmentFacts,
    *,
    rule: str,
    mail_from: str,
    stamp: datetime,
    clinic: ClinicPublic | None = None,
) -> Email:
    """The patient's reminder for one rule (the key includes the start: a moved appointment
    is reminded again for its new time)."""
    me = facts.patient
    when = local_time(facts.starts_at, me.time_zone)
    domain = mail_domain(mail_from)
    key = f"appointment:{facts.id}:reminder:{rule}:{facts.starts_at.astimezone(UTC):%Y%m%dT%H%M%SZ}"
    body = "\n".join(
        [
            f"Hello {me.name},",
            "",
            "Reminder of your appointment.",
            "",
            f"Date: {local_date(facts.starts_at, me.time_zone)}",
            f"Time: {local_hours(facts.starts_at, facts.ends_at, me.time_zone)}",
            f"Doctor: {facts.doctor.name}",
            "",
            "Log in to the clinic a few minutes before the start to join the video visit.",
            "",
            *signature(clinic),
        ]
    )
    return Email(
        dedupe_key=key,
        to=me.email,
        to_name=me.name,
        subject=f"Reminder ({rule}): appointment {when}",
        body=body + "\n",
        message_id=_message_id(key, domain),
        date=stamp.astimezone(UTC).isoformat(),
        appointment_id=facts.id,
        starts_at=facts.starts_at.astimezone(UTC).isoformat(),
    )


# Long subjects (a date with its zone) stay on one line: legal up to 998 characters, and
# folded subjects show a stray leading space in some clients.
_POLICY = _default_policy.clone(max_line_length=250)


def to_message(email: Email, *, mail_from: str) -> EmailMessage:
    """The email as MIME: plain text, plus the .ics as ``text/calendar; method=...``."""
    msg = EmailMessage(policy=_POLICY)
    msg["From"] = mail_from
    msg["To"] = Address(display_name=email.to_name, addr_spec=email.to)
    msg["Subject"] = email.subject
    msg["Date"] = format_datetime(datetime.fromisoformat(email.date))
    msg["Message-ID"] = email.message_id
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Clinic-Key"] = email.dedupe_key
    msg.set_content(email.body)
    if email.ics is not None:
        msg.add_attachment(
            email.ics.encode("utf-8"),
            maintype="text",
            subtype="calendar",
            filename="appointment.ics",
            params={"method": email.ics_method or "REQUEST", "charset": "utf-8"},
        )
    return msg
