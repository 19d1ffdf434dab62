"""Registration is throttled per address and in total, and a flood of it starves nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from test_limits import running_instance

from clinic.web.throttle import RegistrationThrottle

# The deployer's health probe gives an instance this long to answer (Supervisor.check_timeout).
HEALTH_TIMEOUT = 1.0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_each_address_has_its_own_budget_and_all_share_one() -> None:
    clock = Clock()
    throttle = RegistrationThrottle(per_address=2, total=3, period=60, clock=clock)
    assert throttle.wait("a") == 0 and throttle.wait("a") == 0
    assert throttle.wait("a") > 0, "a third from one address waits"
    assert throttle.wait("b") == 0, "another address has its own budget"
    assert throttle.wait("c") > 0, "but all addresses share the total"
    clock.now += 30  # half the period refills half of each budget
    assert throttle.wait("a") == 0
    assert throttle.wait("a") > 0


def test_the_wait_is_the_time_until_a_request_fits() -> None:
    clock = Clock()
    throttle = RegistrationThrottle(per_address=1, total=10, period=60, clock=clock)
    assert throttle.wait("a") == 0
    wait = throttle.wait("a")
    assert 0 < wait <= 60
    clock.now += wait
    assert throttle.wait("a") == 0


def _registration(n: int) -> dict[str, str]:
    return {
        "name": f"Flood {n}",
        "email": f"flood{n}@example.org",
        "password": "a long enough password 1",
        "date_of_birth": "1990-01-01",
    }


async def test_a_registration_flood_is_refused_and_health_checks_stay_answered(
    db_url: str, tmp_path: Path
) -> None:
    budget = {"register_per_address": "3", "register_total": "12"}
    with running_instance(db_url, tmp_path / "var", **budget) as (_, port):
        base = f"http://127.0.0.1:{port}"
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as flood:

            async def register(n: int) -> int:
                # 40 addresses (the local proxy's X-Forwarded-For is trusted in this setup).
                headers = {"X-Forwarded-For": f"203.0.113.{n % 40}"}
                r = await flood.post("/api/v1/patients", json=_registration(n), headers=headers)
                if r.status_code == 429:
                    assert int(r.headers["Retry-After"]) >= 1
                    assert r.json()["error"]["code"] == "too_many_attempts"
                return r.status_code

            async def probe() -> list[int]:
                answers = []
                async with httpx.AsyncClient(base_url=base) as health:
                    while not flooding.done():
                        try:
                            r = await health.get("/healthz/ready", timeout=HEALTH_TIMEOUT)
                            answers.append(r.status_code)
                        except httpx.TimeoutException:
                            answers.append(0)
                        await asyncio.sleep(0.05)
                return answers

            flooding = asyncio.ensure_future(asyncio.gather(*(register(n) for n in range(300))))
            health = await probe()
            statuses = await flooding
        assert sorted(set(statuses)) == [201, 429]
        assert statuses.count(201) == 12, "exactly the total budget was accepted"
        assert health and set(health) == {200}, f"health probes missed: {health.count(0)}"
        async with httpx.AsyncClient(base_url=base) as http:
            more = await http.post("/api/v1/patients", json=_registration(1000))
            assert more.status_code == 429
