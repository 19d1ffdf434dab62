"""Schemathesis over the clinic's OpenAPI, as a patient and as a doctor, with a fixed seed.

A real ``clinic serve`` with the demo data answers generated requests (valid and invalid);
any 5xx, or an answer that does not match the documented schema for its status, fails.
Bounded: a handful of examples per operation, so the run takes a minute or two.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

from conftest import free_port

PATIENT = "maria.rossi@demo.example.org"
DOCTOR = "anna.weber@demo.example.org"
EXAMPLES = 6


@dataclass(frozen=True)
class Target:
    base_url: str
    patient: dict[str, str]
    doctor: dict[str, str]


def _token(base: str, email: str, password: str) -> dict[str, str]:
    r = httpx.post(f"{base}/api/v1/auth/token", json={"email": email, "password": password})
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


@pytest.fixture
def target(db_url: str, tmp_path: Path) -> Iterator[Target]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    var = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLINIC_")}
    env |= {"CLINIC_DATABASE_URL": db_url, "CLINIC_VAR_DIR": str(var)}
    env |= {"CLINIC_WORKER_IN_PROCESS": "false", "CLINIC_ENVIRONMENT": "test"}
    command = [sys.executable, "-m", "clinic", "serve", "--demo", "--port", str(port)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, "clinic serve exited early"
            try:
                if httpx.get(f"{base}/healthz/ready", timeout=1).is_success:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            raise AssertionError("clinic serve not ready")
        password = (var / "secrets" / "demo-password").read_text().strip()
        yield Target(base, _token(base, PATIENT, password), _token(base, DOCTOR, password))
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    # A 5xx is already a failure; an unhandled error in the log is one too.
    assert b"unhandled error" not in err, err.decode()[-3000:]


CHECKS = [not_a_server_error, response_schema_conformance]
BOUNDED = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)


def _fuzz(target: Target, headers: dict[str, str]) -> list[str]:
    """Every operation of the schema, ``EXAMPLES`` generated cases each; the failures."""
    api = schemathesis.openapi.from_url(f"{target.base_url}/api/v1/openapi.json")
    failures: list[str] = []
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 20
    for operation in operations:

        @seed(20261205)
        @BOUNDED
        @given(case=operation.as_strategy())
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=target.base_url, headers=headers, checks=CHECKS)

        try:
            run()
        except Exception as exc:  # each operation's first failure, reported together
            failures.append(f"{operation.label}: {exc}")
    return failures


@pytest.mark.slow
def test_api_as_patient_and_as_doctor(target: Target) -> None:
    assert _fuzz(target, target.patient) == []
    assert _fuzz(target, target.doctor) == []
