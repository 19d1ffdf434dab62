"""The phased switch with a fake data plane: the new colour gets ``[switch] steps`` percent
of new sessions in turn, each step analysed against the live colour over the same window;
a breach sends everyone back at once; promote skips the remaining steps, rollback ends it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from rich.console import Console
from test_controller import (
    FakeDataPlane,
    FakeInstance,
    FakeSupervisor,
    Hooks,
    World,
    at_step,
    done,
    make_config,
    make_controller,
    names,
)

from bluegreen import cli
from bluegreen.admin import AdminContext, make_app, status_json
from bluegreen.config import Colour
from bluegreen.dataplane.table import RoutingTable
from bluegreen.errors import NothingToDo
from bluegreen.state import StateStore
from bluegreen.steps import DeployRequest, Step, plan
from bluegreen.steps.phases import describe
from bluegreen.summary import weights_line

TOKEN = "admin-token-for-tests-0123456789"
MakeWorld = Callable[..., Awaitable[World]]


@pytest.fixture
async def phased(tmp_path: Path) -> AsyncIterator[MakeWorld]:
    worlds: list[World] = []

    async def make(step_window: float = 0.6, steps: tuple[int, ...] = (10, 50, 100)) -> World:
        config = make_config(tmp_path, scale_down_delay=0).with_overrides(
            {
                "switch": {"steps": list(steps), "step_window": step_window},
                "analysis": {"min_requests": 5, "check_interval": 0.05},
            }
        )
        dp, sup, hooks = FakeDataPlane(), FakeSupervisor(), Hooks()
        state = StateStore(tmp_path / "state.sqlite3")
        w = World(make_controller(config, dp, sup, state, hooks), dp, sup, state, hooks)
        await w.controller.start()
        worlds.append(w)
        return w

    yield make
    for w in worlds:
        await w.controller.close()
        w.state.close()


def traffic(w: World, *, green_fails: float = 0.0) -> asyncio.Task[None]:
    """Users, 100 requests a tick, split as the current table routes new sessions; green
    answers 500 to ``green_fails`` of its requests."""

    def answer(colour: Colour, n: int) -> None:
        failed = round(n * green_fails) if colour == "green" else 0
        w.dp.observe(colour, 200, n - failed, seconds=0.02)
        if failed:
            w.dp.observe(colour, 500, failed, seconds=0.02)

    async def feed() -> None:
        while True:
            t = w.dp.table
            split = t.split()
            if split is not None:
                candidate, live, percent = split
                answer(candidate, percent)
                answer(live, 100 - percent)
            elif t.live is not None:
                answer(t.live, 100)
            await asyncio.sleep(0.02)

    return asyncio.get_running_loop().create_task(feed())


def percents(tables: list[RoutingTable]) -> list[int | None]:
    """The weights each applied table gave the candidate, consecutive repeats once."""
    seen: list[int | None] = []
    for t in tables:
        p = t.weights.percent if t.weights is not None else None
        if not seen or seen[-1] != p:
            seen.append(p)
    return seen


async def first_release(w: World, tmp_path: Path) -> None:
    d = await done(w, await w.controller.start_deploy(DeployRequest(path=tmp_path / "a")))
    assert d.status == "succeeded", d
    assert ("phases", "skipped") in names(d)  # nothing live to share sessions with


def test_plan_lists_phases_only_for_a_phased_switch() -> None:
    atomic = plan(manual=True)
    assert Step.PHASES not in atomic
    steps = plan(manual=True, phased=True)
    assert steps.index(Step.PHASES) == steps.index(Step.APPROVE) + 1
    assert steps.index(Step.PHASES) + 1 == steps.index(Step.SWITCH)
    auto = plan(manual=False, phased=True)
    assert auto.index(Step.PHASES) == auto.index(Step.SHADOW) + 1
    assert Step.PHASES not in plan(manual=False, rollback=True, phased=True)


async def test_a_good_release_walks_10_50_100(phased: MakeWorld, tmp_path: Path) -> None:
    w = await phased()
    users = traffic(w)
    try:
        await first_release(w, tmp_path)
        applied_before = len(w.dp.tables)
        d = await done(w, await w.controller.start_deploy(DeployRequest(path=tmp_path / "b")), 30)
    finally:
        users.cancel()
    assert d.status == "succeeded", d
    assert ("phases", "ok") in names(d) and ("analyse", "ok") in names(d)
    tables = w.dp.tables[applied_before:]
    # The data plane saw 10 %, then 50 %, with blue live throughout, then green for everyone.
    assert percents(tables) == [None, 10, 50, None]
    assert all(t.live == "blue" for t in tables if t.weights is not None)
    assert w.dp.table.live == "green" and w.dp.table.weights is None
    out = next(s.output for s in d.steps if s.name == "phases")
    assert out.startswith("10% → 50% → 100%, each analysed 0.6s:")
    assert "10%: " in out and "50%: " in out and "healthy" in out
    assert w.state.current().live_release == "r-b"


async def test_a_release_failing_at_the_first_step_is_rolled_back_there(
    phased: MakeWorld, tmp_path: Path
) -> None:
    w = await phased(step_window=600)  # only an early breach can end this step in time
    users = traffic(w, green_fails=0.25)
    try:
        await first_release(w, tmp_path)
        applied_before = len(w.dp.tables)
        d = await done(w, await w.controller.start_deploy(DeployRequest(path=tmp_path / "b")), 30)
    finally:
        users.cancel()
    assert d.status == "rolled_back", d
    assert d.error is not None and "breached at the 10% step" in d.error
    assert "beyond doubt" in d.error
    assert ("phases", "failed") in names(d)
    assert "switch" not in [n for n, _ in names(d)]
    failed = next(s for s in d.steps if s.name == "phases")
    assert "10%: conclusive" in failed.output
    assert "user requests to green had failed" in failed.output
    # Never went past 10 %; everyone is back on blue and the weights are gone.
    assert percents(w.dp.tables[applied_before:]) == [None, 10, None]
    assert w.dp.table.live == "blue" and w.dp.table.weights is None
    cur = w.state.current()
    assert (cur.live_colour, cur.live_release) == ("blue", "r-a")
    deadline = time.monotonic() + 5
    while any(i.colour == "green" for i in w.supervisor.items):  # drained, then stopped
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    assert "green" in w.dp.drained


async def test_promote_skips_the_remaining_steps(phased: MakeWorld, tmp_path: Path) -> None:
    w = await phased(step_window=600)
    users = traffic(w)
    try:
        await first_release(w, tmp_path)
        applied_before = len(w.dp.tables)
        deploy_id = await w.controller.start_deploy(DeployRequest(path=tmp_path / "b"))
        await at_step(w, deploy_id, "phases")
        await until(lambda: w.dp.table.weights is not None)
        assert await w.controller.promote() == deploy_id
        d = await done(w, deploy_id, 10)
    finally:
        users.cancel()
    assert d.status == "succeeded", d
    out = next(s.output for s in d.steps if s.name == "phases")
    assert "10%: promoted by the operator; the remaining steps are skipped" in out
    assert percents(w.dp.tables[applied_before:]) == [None, 10, None]  # 50 % skipped
    assert w.dp.table.live == "green"


async def test_rollback_during_the_phases_ends_the_deploy_on_blue(
    phased: MakeWorld, tmp_path: Path
) -> None:
    w = await phased(step_window=600)
    users = traffic(w)
    try:
        await first_release(w, tmp_path)
        deploy_id = await w.controller.start_deploy(DeployRequest(path=tmp_path / "b"))
        await at_step(w, deploy_id, "phases")
        await until(lambda: w.dp.table.weights is not None)
        got, message = await w.controller.rollback()
        d = await done(w, deploy_id, 10)
    finally:
        users.cancel()
    assert got == deploy_id
    assert message == f"deploy #{deploy_id} rolled back: everyone is on blue again"
    assert d.status == "rolled_back", d
    assert d.error == "rolled back by the operator at the 10% step"
    assert w.dp.table.live == "blue" and w.dp.table.weights is None
    assert w.state.current().live_release == "r-a"
    with pytest.raises(NothingToDo):
        await w.controller.promote()


def test_describe_the_steps(tmp_path: Path) -> None:
    cfg = make_config(tmp_path).with_overrides({"switch": {"steps": [5, 25, 100]}})
    assert describe(cfg.switch) == "5% → 25% → 100%, each analysed 30s"
    assert describe(make_config(tmp_path).switch) == "atomic"


async def until(condition: Callable[[], Any], within: float = 5) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)


async def test_status_dashboard_and_cli_show_the_current_weights(
    phased: MakeWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = await phased(step_window=600)
    monkeypatch.setattr(FakeInstance, "restarts", 0, raising=False)  # the status shows it
    users = traffic(w)
    ctx = AdminContext(
        config=w.controller.config,
        token=TOKEN,
        controller=w.controller,
        urls={},
        shutdown=lambda: None,
    )
    try:
        await first_release(w, tmp_path)
        assert status_json(ctx)["weights"] is None  # atomic: nothing split
        deploy_id = await w.controller.start_deploy(DeployRequest(path=tmp_path / "b"))
        await at_step(w, deploy_id, "phases")
        await until(lambda: w.dp.table.weights is not None)
        st = status_json(ctx)
        assert st["weights"] == {"green": 10, "blue": 90}
        assert st["switch_steps"] == [10, 50, 100] and st["in_phases"]
        line = "phased switch: new sessions green 10% · blue 90% (steps 10% → 50% → 100%)"
        assert weights_line(st) == line
        async with TestClient(TestServer(make_app(ctx))) as client:
            page = await client.get("/", headers={"Authorization": f"Bearer {TOKEN}"})
            html = await page.text()
            assert page.status == 200 and line in html
            assert "disabled>Promote" not in html  # promote skips the remaining steps
            api = await client.get("/api/status", headers={"Authorization": f"Bearer {TOKEN}"})
            assert (await api.json())["weights"] == {"green": 10, "blue": 90}
        console = Console(record=True, width=200)
        monkeypatch.setattr(cli, "console", console)
        cli._print_status({**st, "urls": {}})
        assert line in console.export_text()
        await w.controller.promote()
        await done(w, deploy_id, 10)
    finally:
        users.cancel()
    assert status_json(ctx)["weights"] is None


async def test_a_daemon_stopping_during_the_phases_leaves_everyone_on_blue(
    phased: MakeWorld, tmp_path: Path
) -> None:
    w = await phased(step_window=600)
    users = traffic(w)
    try:
        await first_release(w, tmp_path)
        deploy_id = await w.controller.start_deploy(DeployRequest(path=tmp_path / "b"))
        await at_step(w, deploy_id, "phases")
        await until(lambda: w.dp.table.weights is not None)
        await w.controller.close()
    finally:
        users.cancel()
    assert w.dp.table.live == "blue" and w.dp.table.weights is None
    d = w.state.deploy(deploy_id)
    assert d is not None and d.status == "rolled_back", d  # everyone went back to blue
    assert w.state.current().live_release == "r-a"


async def test_a_step_without_enough_requests_waits_longer_then_says_so(
    phased: MakeWorld, tmp_path: Path
) -> None:
    w = await phased(step_window=0.3, steps=(20, 100))
    await first_release(w, tmp_path)
    w.dp.observe("blue", 200, 100)  # nobody reaches green during its step
    d = await done(w, await w.controller.start_deploy(DeployRequest(path=tmp_path / "b")), 30)
    assert d.status == "succeeded", d
    phases = next(s for s in d.steps if s.name == "phases")
    assert "20%: " in phases.output and "inconclusive: only 0 requests" in phases.output
    assert "(window extended 2x for lack of requests)" in phases.output
