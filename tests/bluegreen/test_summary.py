"""The operator's one-line summaries."""

from __future__ import annotations

import asyncio
from datetime import UTC, timedelta, timezone
from pathlib import Path

from bluegreen.daemon import wait_live
from bluegreen.state import StateStore
from bluegreen.summary import deploy_line, ready_line

RUNNING = {
    "id": 7,
    "release_id": "abc123",
    "steps": [{"name": "switch", "status": "ok"}, {"name": "analyse", "status": "running"}],
}


def test_a_running_deploy_names_its_step() -> None:
    assert deploy_line(RUNNING, None) == "deploy #7 of abc123 running: analyse"
    assert deploy_line(None, None) is None


def test_a_deploy_keeping_the_old_colour_warm_is_a_success_until_hh_mm() -> None:
    retiring = {**RUNNING, "steps": [{"name": "retire", "status": "running"}]}
    warm = {"colour": "blue", "release": "old1", "until": "2026-12-05T13:05:00+00:00"}
    line = deploy_line(retiring, warm, tz=timezone(timedelta(hours=1)))
    assert line == (
        "deploy #7 of abc123 succeeded; blue (old colour) warm until 14:05: "
        "`bluegreen rollback` is instant until then"
    )
    assert "running" not in (deploy_line(retiring, warm, tz=UTC) or "")


def test_the_ready_line_has_both_addresses_and_the_start_up_time() -> None:
    line = ready_line(
        "clinic",
        public="http://127.0.0.1:8000",
        https="https://127.0.0.1:8443",
        dashboard="http://127.0.0.1:8001",
        seconds=41.84,
    )
    assert line == (
        "bluegreen: clinic ready on https://127.0.0.1:8443 and http://127.0.0.1:8000 "
        "in 41.8 s (dashboard http://127.0.0.1:8001/)"
    )


async def test_ready_is_announced_once_a_colour_is_live_and_not_for_a_failed_deploy(
    tmp_path: Path,
) -> None:
    with StateStore(tmp_path / "state.sqlite3") as state:
        first = state.begin_deploy("r1", "HEAD")
        waiting = asyncio.create_task(wait_live(state, first, poll=0.01))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # nothing live yet, the deploy still runs
        state.set_live("blue", "r1")
        assert await waiting is True
    with StateStore(tmp_path / "other.sqlite3") as state:
        failed = state.begin_deploy("r1", "HEAD")
        waiting = asyncio.create_task(wait_live(state, failed, poll=0.01))
        state.finish_deploy(failed, "failed", "ready: never ready")
        assert await waiting is False
