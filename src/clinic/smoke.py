"""The clinic's smoke test: a synthetic patient journey over HTTP against a base URL.

Log in as the smoke-test patient (who holds no real patient data), find the smoke-test doctor,
book a free slot, read it back, cancel it. Each step is printed; the first failure stops the
journey and is named.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from clinic.seed import SMOKE_PATIENT_EMAIL


class SmokeFailed(Exception):
    def __init__(self, step: str, detail: str) -> None:
        super().__init__(f"step '{step}' failed: {detail}")
        self.step = step


def _expect(step: str, response: httpx.Response, *statuses: int) -> Any:
    if response.status_code not in statuses:
        raise SmokeFailed(step, f"HTTP {response.status_code}: {response.text[:300]}")
    return response.json() if response.content else None


def run_smoke(
    base_url: str, password: str, *, echo: Callable[[str], None] = print, timeout: float = 10.0
) -> None:
    """Run the journey; raises SmokeFailed naming the step that failed."""
    current = "connect"

    def step(name: str, short: str) -> None:
        nonlocal current
        current = short
        echo(f"smoke: {name} ...")

    try:
        _journey(base_url, password, step, timeout)
    except httpx.HTTPError as exc:  # no answer at all: name the step that was waiting
        raise SmokeFailed(current, f"{type(exc).__name__}: {exc}") from exc
    echo("smoke: all steps passed")


def _journey(
    base_url: str, password: str, step: Callable[[str, str], None], timeout: float
) -> None:
    with httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout) as http:
        step("ready", "ready")
        _expect("ready", http.get("/healthz/ready"), 200)

        step("log in as the smoke-test patient", "log in")
        token = _expect(
            "log in",
            http.post(
                "/api/v1/auth/token",
                json={"email": SMOKE_PATIENT_EMAIL, "password": password, "name": "smoke"},
            ),
            201,
        )
        auth = {"Authorization": f"Bearer {token['token']}"}
        try:
            step("find the smoke-test doctor", "find doctor")
            doctors = _expect(
                "find doctor",
                http.get("/api/v1/doctors", params={"name": "Smoke Test"}, headers=auth),
                200,
            )
            if not doctors:
                raise SmokeFailed("find doctor", "the smoke-test doctor is not listed")
            doctor_id = doctors[0]["id"]

            step("find a free slot", "find slot")
            # A day ahead, so the patient's cancellation cut-off never gets in the way.
            start = datetime.now(UTC) + timedelta(days=1)
            free = _expect(
                "find slot",
                http.get(
                    f"/api/v1/doctors/{doctor_id}/slots",
                    params={
                        "start": start.isoformat(),
                        "end": (start + timedelta(days=2)).isoformat(),
                    },
                    headers=auth,
                ),
                200,
            )["slots"]
            if not free:
                raise SmokeFailed("find slot", "no free slot in the next days")

            step(f"book {free[0]['starts_at']}", "book")
            booked = _expect(
                "book",
                http.post(
                    "/api/v1/appointments",
                    json={
                        "doctor_id": doctor_id,
                        "starts_at": free[0]["starts_at"],
                        "reason": "deployment smoke test",
                    },
                    headers={**auth, "Idempotency-Key": f"smoke-{uuid.uuid4()}"},
                ),
                201,
            )

            step(f"read back appointment {booked['id']}", "read back")
            got = _expect(
                "read back", http.get(f"/api/v1/appointments/{booked['id']}", headers=auth), 200
            )
            if got["status"] != "booked" or got["starts_at"] != booked["starts_at"]:
                raise SmokeFailed("read back", f"unexpected appointment: {got}")

            step(f"cancel appointment {booked['id']}", "cancel")
            cancelled = _expect(
                "cancel",
                http.post(f"/api/v1/appointments/{booked['id']}/cancel", json={}, headers=auth),
                200,
            )
            if cancelled["status"] != "cancelled":
                raise SmokeFailed("cancel", f"status is {cancelled['status']}")
        finally:
            # Revoke the journey's token; a failure here must not hide the step that failed.
            with contextlib.suppress(httpx.HTTPError):
                http.delete(f"/api/v1/tokens/{token['id']}", headers=auth)
