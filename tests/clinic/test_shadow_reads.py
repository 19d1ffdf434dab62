"""A shadow window changes nothing: live users' reads mirrored to the colour being tested
(Envoy marks them with ``-shadow`` on the Host) run in read-only transactions, write no audit
row and no last-used time, and a mirrored write is refused. The same reads unmarked do
write the audit trail, so the comparison can fail."""

from __future__ import annotations

from pathlib import Path

import httpx
from sqlalchemy import text
from test_pages import log_in

from bluegreen.config import load_config
from conftest import RunningApp
from factories import make_doctor, make_patient, next_weekday_at, token_for

REPO_CONFIG = load_config(Path(__file__).resolve().parents[2] / "bluegreen.toml", environ={})

TABLES_SQL = (
    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
    "AND table_type = 'BASE TABLE' AND table_name NOT LIKE 'procrastinate%' ORDER BY 1"
)


async def snapshot(sessions) -> dict[str, str]:
    """Every application table's content, hashed (the job queue's bookkeeping apart)."""
    out: dict[str, str] = {}
    async with sessions() as s:
        for (table,) in (await s.execute(text(TABLES_SQL))).all():
            agg = "md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), ''))"
            digest = await s.scalar(text(f'SELECT {agg} FROM "{table}" t'))  # noqa: S608
            out[table] = str(digest)
    return out


def shadow_host(app: RunningApp) -> dict[str, str]:
    host, port = app.base_url.removeprefix("http://").rsplit(":", 1)
    return {"Host": f"{host}-shadow:{port}"}


async def test_a_shadow_window_leaves_the_database_unchanged(app: RunningApp, sessions) -> None:
    settings = app.settings
    doctor = await make_doctor(sessions, settings)
    patient = await make_patient(sessions, settings)
    async with app.client() as http:
        bearer = await token_for(http, patient)
        r = await http.post(
            "/api/v1/appointments",
            headers=bearer,
            json={
                "doctor_id": doctor.user_id,
                "starts_at": next_weekday_at(10).isoformat(),
                "reason": "check-up",
            },
        )
        assert r.status_code == 201, r.text
        appointment = r.json()["id"]
        await log_in(http, patient.email)
        reads = [
            ("/api/v1/appointments", bearer),
            (f"/api/v1/appointments/{appointment}", bearer),
            ("/appointments", {}),
            (f"/appointments/{appointment}", {}),
            ("/doctors", {}),
            (f"/doctors/{doctor.user_id}", {}),
        ]
        before = await snapshot(sessions)
        for path, headers in reads:
            r = await http.get(path, headers={**headers, **shadow_host(app)})
            assert r.status_code == 200, (path, r.text[:300])
        # A mirrored write is refused before it reaches any feature.
        r = await http.post(
            f"/api/v1/appointments/{appointment}/cancel",
            headers={**bearer, **shadow_host(app)},
            json={"reason": "not me"},
        )
        assert r.status_code == 400 and "only read" in r.text
        assert await snapshot(sessions) == before

        # The same reads from a user (no mark) are audited: the snapshot can tell.
        for path, headers in reads:
            assert (await http.get(path, headers=headers)).status_code == 200
        after = await snapshot(sessions)
    assert after["audit_records"] != before["audit_records"]


async def test_the_mark_is_the_data_planes_exact_suffix(app: RunningApp) -> None:
    """Only a host name ending in ``-shadow`` (Envoy's mark, before the port) counts; a
    look-alike is an ordinary request (and the data plane refuses client shadow hosts)."""
    async with httpx.AsyncClient(base_url=app.base_url, timeout=20) as http:
        host, port = app.base_url.removeprefix("http://").rsplit(":", 1)
        for name in (f"{host}-shadowy:{port}", f"shadow.{host}:{port}"):
            r = await http.post("/api/v1/patients", headers={"Host": name}, json={})
            assert r.status_code == 422, (name, r.text)  # validation, not the shadow refusal
        r = await http.post("/api/v1/patients", headers={"Host": f"[::1]-shadow:{port}"}, json={})
        assert r.status_code == 400 and "only read" in r.text


async def test_the_deploys_synthetic_reads_are_real_pages(http: httpx.AsyncClient) -> None:
    # bluegreen.toml's [shadow] synthetic_paths are what the shadow step compares when live
    # traffic is thin: each must be a page the clinic serves (it once named a stylesheet that
    # was not there, so the static group was judged on 404s), and a read with no side effects.
    paths = REPO_CONFIG.shadow.synthetic_paths
    assert paths
    for path in paths:
        r = await http.get(path)
        assert r.status_code == 200, (path, r.status_code)
