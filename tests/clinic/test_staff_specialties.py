"""The managed specialty list: the migration folds free-text spellings into one name, admins
edit the list (API and page), registration takes the list's spelling or refuses, and search
offers each name once."""

from __future__ import annotations

import asyncio
import re
import uuid

import sqlalchemy as sa
from sqlalchemy import select

from clinic.accounts.models import Doctor
from clinic.core import schema
from factories import make_admin, make_doctor, make_patient, set_user, token_for


def _sync_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


async def test_migration_folds_spellings_case_insensitively(pg) -> None:
    url = pg.ensure_database(f"m_{uuid.uuid4().hex[:12]}")
    async_url = url.replace("postgresql://", "postgresql+asyncpg://", 1)
    await asyncio.to_thread(schema.upgrade, async_url, "0003")
    engine = sa.create_engine(_sync_url(url))
    spellings = ["dermatology", "Dermatology", "Dermatology ", "  general   practice", "Cardiology"]
    with engine.begin() as c:
        for i, s in enumerate(spellings):
            uid = c.execute(
                sa.text(
                    "INSERT INTO users (email, name, password_hash, role, time_zone) "
                    "VALUES (:e, :n, 'x', 'doctor', 'UTC') RETURNING id"
                ),
                {"e": f"d{i}@example.org", "n": f"Dr {i}"},
            ).scalar_one()
            c.execute(
                sa.text(
                    "INSERT INTO doctors (user_id, specialty, licence_number) VALUES (:u, :s, :l)"
                ),
                {"u": uid, "s": s, "l": f"LIC-{i}"},
            )
    await asyncio.to_thread(schema.upgrade, async_url, "0005")
    with engine.connect() as c:
        names = c.execute(sa.text("SELECT name FROM specialties")).scalars().all()
        doctors = c.execute(sa.text("SELECT specialty FROM doctors ORDER BY user_id")).scalars()
        doctors = list(doctors)
    engine.dispose()
    lowered = [n.lower() for n in names]
    assert len(lowered) == len(set(lowered))  # one row per name, whatever its case
    assert "Dermatology" in names and "dermatology" not in names
    assert "General practice" in names and "Neurology" in names  # starter list
    assert doctors == ["Dermatology"] * 3 + ["General practice", "Cardiology"]


async def test_admin_edits_the_list_over_the_api(app, http, sessions, settings) -> None:
    admin = await make_admin(sessions, settings)
    patient = await make_patient(sessions, settings)
    a_auth, p_auth = await token_for(http, admin), await token_for(http, patient)
    url = "/api/v1/specialties"
    r = await http.post(url, json={"name": "  Sports   medicine "}, headers=a_auth)
    assert r.status_code == 201, r.text
    added = r.json()
    assert added["name"] == "Sports medicine" and added["doctors"] == 0
    r = await http.post(url, json={"name": "SPORTS MEDICINE"}, headers=a_auth)
    assert r.status_code == 409 and "already on the list" in r.text
    assert (await http.post(url, json={"name": "X"}, headers=p_auth)).status_code == 403
    assert (await http.post(url, json={"name": "Sleep"})).status_code == 401
    assert (await http.post(url, json={"name": " "}, headers=a_auth)).status_code == 422

    await make_doctor(sessions, settings, specialty="cardiology")  # takes the list's spelling
    cardiology = next(s for s in (await http.get(url)).json() if s["name"] == "Cardiology")
    assert cardiology["doctors"] == 1
    r = await http.delete(f"{url}/{cardiology['id']}", headers=a_auth)
    assert r.status_code == 409  # a doctor has it
    r = await http.patch(
        f"{url}/{cardiology['id']}", json={"name": "Cardiology (heart)"}, headers=a_auth
    )
    assert r.status_code == 200 and r.json()["doctors"] == 1
    async with sessions() as session:
        assert list(await session.scalars(select(Doctor.specialty))) == ["Cardiology (heart)"]
    assert (await http.delete(f"{url}/{added['id']}", headers=a_auth)).status_code == 204
    names = [s["name"] for s in (await http.get(url)).json()]
    assert "Sports medicine" not in names and "Cardiology (heart)" in names
    assert (await http.delete(f"{url}/{added['id']}", headers=a_auth)).status_code == 404


async def _csrf(browser, path: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', (await browser.get(path)).text)
    assert found
    return found.group(1)


async def test_registration_uses_the_list(app, http) -> None:
    page = await http.get("/register/doctor")
    assert '<select id="specialty" name="specialty"' in page.text
    assert '<option value="General practice">' in page.text
    form = {
        "csrf_token": await _csrf(http, "/register/doctor"),
        "name": "Dr. New Person",
        "email": "new.doctor@example.org",
        "password": "a long and unusual passphrase 42",
        "time_zone": "UTC",
        "specialty": "Astrology",
        "licence_number": "LIC-777",
    }
    r = await http.post("/register/doctor", data=form)
    assert r.status_code == 422 and "Choose a specialty from the list." in r.text
    assert '<option value="Dermatology">' in r.text  # the list is offered again
    r = await http.post("/register/doctor", data={**form, "specialty": "dermatology"})
    assert r.status_code == 303, r.text


async def test_search_lists_each_name_once(app, http, sessions, settings) -> None:
    await make_doctor(sessions, settings, specialty="dermatology")
    await make_doctor(sessions, settings, specialty="Dermatology")
    smoke = await make_doctor(sessions, settings, specialty="Psychiatry")
    await set_user(sessions, smoke.user_id, is_smoke=True)
    page = (await http.get("/doctors")).text
    options = re.findall(r'<option value="([^"]*)"', page)
    assert options == ["", "Dermatology"]  # no second spelling, no smoke doctor's specialty
    found = await http.get("/api/v1/doctors", params={"specialty": "DERMATOLOGY"})
    assert len(found.json()) == 2
    assert {d["specialty"] for d in found.json()} == {"Dermatology"}


async def test_admin_page_adds_and_shows_refusals_next_to_the_field(
    app, sessions, settings
) -> None:
    from visits_fixtures import log_in

    admin = await make_admin(sessions, settings)
    async with app.client() as browser:
        await log_in(browser, admin.email)
        token = await _csrf(browser, "/admin/specialties")
        r = await browser.post(
            "/admin/specialties", data={"csrf_token": token, "name": "Geriatrics"}
        )
        assert r.status_code == 303
        page = await browser.get("/admin/specialties")
        assert "Geriatrics is on the list." in page.text and "<td>Geriatrics</td>" in page.text
        r = await browser.post(
            "/admin/specialties", data={"csrf_token": token, "name": "geriatrics"}
        )
        assert r.status_code == 409
        assert 'id="name-error"' in r.text and "Geriatrics is already on the list." in r.text
    patient = await make_patient(sessions, settings)
    async with app.client() as browser:
        await log_in(browser, patient.email)
        assert (await browser.get("/admin/specialties")).status_code == 403
