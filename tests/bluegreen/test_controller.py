"""The deploy state machine without I/O: pure transitions, then the Controller with fakes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bluegreen.config import COLOURS, Colour, Config, parse_config
from bluegreen.controller import Controller
from bluegreen.dataplane.stats import (
    BUCKETS,
    STATUS_CLASSES,
    ColourStats,
    bucket_index,
    status_class,
)
from bluegreen.dataplane.table import EMPTY_TABLE, RoutingTable
from bluegreen.environment import Environment
from bluegreen.errors import ConfigError, DeployInProgress, NothingToDo, ReadyTimeout
from bluegreen.hooks import HookResult
from bluegreen.release import Release
from bluegreen.state import Deploy, StateStore
from bluegreen.steps import (
    ControlPlane,
    DeployRequest,
    OnFailure,
    Step,
    failure_policy,
    final_status,
    plan,
    target_colour,
)
from bluegreen.traffic import StatsHistory, window_baseline

# --------------------------------------------------------------------------- pure


def test_step_order() -> None:
    assert [s.value for s in plan(manual=False)] == [
        "prepare",
        "lint",
        "rehearse",
        "migrate",
        "verify",
        "start",
        "ready",
        "smoke",
        "shadow",
        "switch",
        "drain",
        "analyse",
        "retire",
    ]
    manual = plan(manual=True)
    assert manual.index(Step.APPROVE) == manual.index(Step.SHADOW) + 1
    assert manual.index(Step.APPROVE) + 1 == manual.index(Step.SWITCH)
    assert plan(manual=False, rollback=True) == (
        Step.START,
        Step.READY,
        Step.SMOKE,
        Step.SWITCH,
        Step.DRAIN,
        Step.ANALYSE,
        Step.RETIRE,
    )


def test_failure_policy_before_and_after_the_switch() -> None:
    steps = plan(manual=True)
    switch = steps.index(Step.SWITCH)
    assert all(failure_policy(s) is OnFailure.ABORT for s in steps[: switch + 1])
    assert failure_policy(Step.ANALYSE) is OnFailure.ROLL_BACK
    assert failure_policy(Step.DRAIN) is OnFailure.CONTINUE
    assert failure_policy(Step.RETIRE) is OnFailure.CONTINUE


def test_final_status_and_colours() -> None:
    assert final_status(None, None, cancelled=False) == "succeeded"
    assert final_status(Step.SMOKE, OnFailure.ABORT, cancelled=False) == "failed"
    assert final_status(Step.APPROVE, OnFailure.ABORT, cancelled=True) == "aborted"
    assert final_status(Step.ANALYSE, OnFailure.ROLL_BACK, cancelled=False) == "rolled_back"
    assert final_status(Step.RETIRE, OnFailure.CONTINUE, cancelled=False) == "succeeded"
    assert target_colour(None) == "blue"
    assert target_colour("blue") == "green"
    assert target_colour("green") == "blue"


def test_window_baseline_diffs_the_last_seconds() -> None:
    def snap(n: int) -> ColourStats:
        return ColourStats(colour="blue", requests=n, by_class=(("2xx", n),))

    ring = [(0.0, snap(0)), (10.0, snap(100)), (20.0, snap(150))]
    assert window_baseline(ring, snap(200), 30.0, 10.0).requests == 50  # since t=20
    assert window_baseline(ring, snap(200), 30.0, 15.0).requests == 100  # since t=10
    assert window_baseline(ring, snap(200), 30.0, 100.0).requests == 200  # oldest there is
    assert window_baseline([], snap(7), 30.0, 10.0).requests == 7


def test_database_and_state_env_config_keys(tmp_path: Path) -> None:
    base: dict[str, Any] = {"app": {"name": "a", "command": "{python} app.py --port {port}"}}
    cfg = parse_config(
        {
            **base,
            "state": {"dir": "var", "dir_env": "APP_VAR_DIR"},
            "database": {
                "url_command": "{python} -m app db url",
                "env": "APP_DATABASE_URL",
                "stop_command": "{python} -m app db stop",
            },
        },
        path=tmp_path / "bluegreen.toml",
        root=tmp_path,
        environ={},
    )
    assert cfg.state.dir_env == "APP_VAR_DIR"
    assert cfg.database is not None and cfg.database.env == "APP_DATABASE_URL"
    assert cfg.database.url_command.render(python="py", release="r", release_dir="d") == [
        "py",
        "-m",
        "app",
        "db",
        "url",
    ]
    assert cfg.database.stop_command is not None
    plain = parse_config(base, path=tmp_path / "b.toml", root=tmp_path, environ={})
    assert plain.database is None and plain.state.dir_env is None
    bad = [
        ({"database": {"env": "X"}}, "database.url_command: required"),
        ({"database": {"url_command": "x"}}, "database.env: required"),
        ({"database": {"url_command": "x", "env": "1X"}}, "database.env: not a valid"),
        ({"database": {"url_command": "{port}", "env": "X"}}, "unknown placeholder {port}"),
        ({"database": {"url_command": "x", "env": "X", "extra": 1}}, "database.extra: unknown"),
        ({"state": {"dir_env": "not valid"}}, "state.dir_env: not a valid"),
    ]
    for extra, message in bad:
        with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace("}", r"\}")):
            parse_config({**base, **extra}, path=tmp_path / "b.toml", root=tmp_path, environ={})


# --------------------------------------------------------------------------- fakes


class FakeDataPlane:
    """Records every applied table; per-colour counters stand for Envoy's statistics."""

    def __init__(self) -> None:
        self.table: RoutingTable = EMPTY_TABLE
        self.tables: list[RoutingTable] = []
        self.drained: list[Colour] = []
        self.left_open = 0  # what drain() reports still open
        self.counts: dict[Colour, dict[str, int]] = {c: {} for c in COLOURS}
        self.latency: dict[Colour, list[int]] = {c: [0] * (len(BUCKETS) + 1) for c in COLOURS}
        self.on_live: Callable[[Colour | None], None] = lambda c: None

    async def apply(self, table: RoutingTable) -> None:
        changed = table.live != self.table.live
        self.table = table
        self.tables.append(table)
        if changed:
            self.on_live(table.live)

    def observe(self, colour: Colour, status: int, n: int = 1, seconds: float = 0.01) -> None:
        """``n`` answers of ``colour`` with ``status``, each taking ``seconds``."""
        cls = status_class(status)
        self.counts[colour][cls] = self.counts[colour].get(cls, 0) + n
        self.latency[colour][bucket_index(seconds)] += n

    async def stats(self) -> dict[Colour, ColourStats]:
        return {
            c: ColourStats(
                colour=c,
                requests=sum(self.counts[c].values()),
                by_class=tuple((k, self.counts[c].get(k, 0)) for k in STATUS_CLASSES),
                buckets=tuple(self.latency[c]),
            )
            for c in COLOURS
        }

    async def drain(self, colour: Colour, timeout: float) -> int:  # noqa: ASYNC109
        self.drained.append(colour)
        return self.left_open

    def urls(self) -> dict[str, str]:
        return {"public": "http://127.0.0.1:9000", "preview": "http://127.0.0.1:9002"}


@dataclass
class FakeInstance:
    id: str
    colour: Colour
    release: Release
    env: dict[str, str]
    host: str = "127.0.0.1"
    port: int = 0
    healthy: bool = False
    pid: int | None = 1
    state: str = "running"


@dataclass
class FakeSupervisor:
    items: list[FakeInstance] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    recycled: list[str] = field(default_factory=list)
    ports: int = 10000

    def instances(self, colour: Colour | None = None) -> list[Any]:
        return [i for i in self.items if colour is None or i.colour == colour]

    async def start_instance(
        self,
        *,
        id: str,
        colour: Colour,
        release: Release,
        command_for: Callable[[int], Sequence[str]],
        env: Mapping[str, str],
        cwd: Path,
        live_path: str,
        ready_path: str,
    ) -> Any:
        self.ports += 1
        command_for(self.ports)
        inst = FakeInstance(id=id, colour=colour, release=release, env=dict(env), port=self.ports)
        self.items.append(inst)
        return inst

    async def stop_instance(self, inst: Any, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        self.items.remove(inst)
        self.stopped.append(inst.id)

    async def wait_ready(self, instances: Sequence[Any], timeout: float) -> None:  # noqa: ASYNC109
        for i in instances:
            if i.env.get("NEVER_READY") == "1":
                raise ReadyTimeout(f"instance(s) {i.id} did not become ready", [i.id])
            i.healthy = True

    async def recycle(self, inst: Any, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        self.recycled.append(inst.id)


class Hooks:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.fail: set[str] = set()

    async def __call__(self, argv: Sequence[str], **kwargs: Any) -> HookResult:
        self.calls.append(list(argv))
        name = argv[1]
        if name in self.fail:
            return HookResult(False, 3, f"{name}: it broke")
        return HookResult(True, 0, f"{name}: fine")


def preparer(tmp: Path) -> Callable[..., Release]:
    def prepare(*, path: Path | None = None, ref: str | None = None, **_: Any) -> Release:
        rid = f"r-{path.name if path else ref}"
        d = tmp / "releases" / rid
        d.mkdir(parents=True, exist_ok=True)
        return Release(
            id=rid, dir=d, python=Path("/py"), deps_hash="h", source="x", venv=tmp / "venv"
        )

    return prepare


@dataclass
class World:
    controller: Controller
    dp: FakeDataPlane
    supervisor: FakeSupervisor
    state: StateStore
    hooks: Hooks


def make_controller(
    config: Config, dp: FakeDataPlane, sup: FakeSupervisor, state: StateStore, hooks: Hooks
) -> Controller:
    plane = ControlPlane(
        config=config,
        state=state,
        supervisor=sup,
        dataplane=dp,
        rehearsal_runner=sup,
        environment=Environment(config),
        traffic=StatsHistory(),
        hook_runner=hooks,
        preparer=preparer(config.root),
    )
    return Controller(plane, sample_interval=0.05)


def make_config(tmp: Path, **timeouts: float) -> Config:
    return parse_config(
        {
            "app": {"name": "t", "command": "{python} app.py --port {port}"},
            "hooks": {"migrate": "{python} migrate", "smoke": "{python} smoke {base_url}"},
            "replicas": {"blue": 2, "green": 2},
            "timeouts": {
                "analysis_window": 0.2,
                "scale_down_delay": 0,
                "drain": 0.1,
                **timeouts,
            },
            "analysis": {"min_requests": 5},
            "state": {"dir": str(tmp / "var")},
        },
        path=tmp / "bluegreen.toml",
        root=tmp,
        environ={},
    )


@pytest.fixture
async def world(tmp_path: Path) -> Any:
    worlds: list[World] = []

    async def make(**timeouts: float) -> World:
        dp, sup, hooks = FakeDataPlane(), FakeSupervisor(), Hooks()
        state = StateStore(tmp_path / "state.sqlite3")
        ctl = make_controller(make_config(tmp_path, **timeouts), dp, sup, state, hooks)
        await ctl.start()
        w = World(ctl, dp, sup, state, hooks)
        worlds.append(w)
        return w

    yield make
    for w in worlds:
        await w.controller.close()
        w.state.close()


async def done(w: World, deploy_id: int, within: float = 5) -> Deploy:
    deadline = time.monotonic() + within
    while True:
        d = w.state.deploy(deploy_id)
        assert d is not None
        if d.status != "running":
            return d
        assert time.monotonic() < deadline, d
        await asyncio.sleep(0.01)


async def at_step(w: World, deploy_id: int, step: str) -> None:
    deadline = time.monotonic() + 5
    while True:
        d = w.state.deploy(deploy_id)
        assert d is not None
        s = d.running_step()
        if s is not None and s.name == step:
            return
        assert d.status == "running" and time.monotonic() < deadline, d
        await asyncio.sleep(0.01)


def names(d: Deploy) -> list[tuple[str, str]]:
    return [(s.name, s.status) for s in d.steps]


# --------------------------------------------------------------------------- controller


async def test_first_deploy_goes_to_blue_then_green(world: Any, tmp_path: Path) -> None:
    w: World = await world()
    first = await done(w, await w.controller.start_deploy(DeployRequest(path=tmp_path / "a")))
    assert first.status == "succeeded"
    assert names(first) == [
        ("prepare", "ok"),
        ("lint", "skipped"),  # no [migrations] in this config
        ("rehearse", "skipped"),
        ("migrate", "ok"),
        ("verify", "skipped"),
        ("start", "ok"),
        ("ready", "ok"),
        ("smoke", "ok"),
        ("shadow", "skipped"),
        ("switch", "ok"),
        ("drain", "skipped"),
        ("analyse", "skipped"),
        ("retire", "skipped"),
    ]
    assert first.release_id == "r-a"
    assert w.dp.table.live == "blue"
    assert {i.colour for i in w.supervisor.items} == {"blue"}
    assert len(w.dp.table.healthy("blue")) == 2
    smoke = next(c for c in w.hooks.calls if c[1] == "smoke")
    assert smoke[2] == "http://127.0.0.1:9002"

    second = await done(w, await w.controller.start_deploy(DeployRequest(path=tmp_path / "b")))
    assert second.status == "succeeded", second
    # Skipped without [migrations], and without [shadow] (share 0: no mirroring).
    migration_steps = {"lint", "rehearse", "verify", "shadow"}
    assert [s for s, st in names(second) if st == "ok"] == [
        s.value for s in plan(manual=False) if s.value not in migration_steps
    ]
    # Preview showed green while blue stayed live; then one swap made green live.
    lives = [(t.live, t.preview_colour()) for t in w.dp.tables]
    assert ("blue", "green") in lives
    assert w.dp.table.live == "green" and w.dp.table.preview is None
    assert w.dp.drained == ["blue"]
    assert {i.colour for i in w.supervisor.items} == {"green"}
    cur = w.state.current()
    assert (cur.live_colour, cur.live_release, cur.previous_release) == ("green", "r-b", "r-a")
    assert cur.colours == {"blue": None, "green": "r-b"}


async def test_manual_approval_then_promote(world: Any, tmp_path: Path) -> None:
    w: World = await world()
    await done(w, await w.controller.start_deploy(DeployRequest(path=tmp_path / "a")))
    deploy_id = await w.controller.start_deploy(DeployRequest(path=tmp_path / "b", manual=True))
    await at_step(w, deploy_id, "approve")
    assert w.dp.table.live == "blue"
    with pytest.raises(DeployInProgress, match=f"#{deploy_id}"):
        await w.controller.start_deploy(DeployRequest(path=tmp_path / "c"))
    assert await w.controller.promote() == deploy_id
    d = await done(w, deploy_id)
    assert d.status == "succeeded"
    assert ("approve", "ok") in names(d)
    assert w.dp.table.live == "green"


async def test_rollback_during_approval_aborts_and_stops_green(world: Any, tmp_path: Path) -> None:
    w: World = await world()
    await done(w, await w.controller.start_deploy(DeployRequest(path=tmp_path / "a")))
    deploy_id = await w.controller.start_deploy(DeployRequest(path=tmp_path / "b", manual=True))
    await at_step(w, deploy_id, "approve")
    _, message = await w.controller.rollback()
    assert "cancelled" in message
    d = await done(w, deploy_id)
    assert d.status == "aborted"
    assert ("approve", "failed") in names(d)
    assert w.dp.table.live == "blue" and w.dp.table.preview_colour() == "blue"
    assert not w.supervisor.instances("green")
    assert w.state.current().live_colour == "blue"


@pytest.mark.parametrize("broken", ["migrate", "smoke", "ready"])
async def test_failure_before_switch_aborts_with_green_stopped(
    world: Any, tmp_path: Path, broken: str
) -> None:
    w: World = await world()
    await done(w, await w.controller.start_deploy(DeployRequest(path=tmp_path / "a")))
    env = {}
    if broken == "ready":
        env["NEVER_READY"] = "1"
    else:
        w.hooks.fail.add(broken)
    d = await done(w, await w.controller.start_deploy(DeployRequest(path=tmp_path / "b", env=env)))
    assert d.status == "failed"
    assert d.error is not None and broken in d.error
    failed = [s for s in d.steps if s.status == "failed"]
    assert [s.name for s in failed] == [broken]
    if broken != "ready":
        assert "it broke" in failed[0].output
    assert "switch" not in [s.name for s in d.steps]
    assert all(t.live == "blue" for t in w.dp.tables if t.live is not None)
    assert w.dp.table.preview_colour() == "blue"
    assert not w.supervisor.instances("green")
    assert len(w.supervisor.instances("blue")) == 2
    cur = w.state.current()
    assert cur.live_colour == "blue" and cur.colours["green"] is None


async def test_analysis_breach_rolls_back_to_blue(world: Any, tmp_path: Path) -> None:
    w: World = await world(scale_down_delay=5)
    await done(w, await w.controller.start_deploy(DeployRequest(path=tmp_path / "a")))
    w.dp.observe("blue", 200, 50)

    def on_live(colour: Colour | None) -> None:
        if colour == "green":
            w.dp.observe("green", 500, 50)

    w.dp.on_live = on_live
    d = await done(w, await w.controller.start_deploy(DeployRequest(path=tmp_path / "b")))
    assert d.status == "rolled_back", d
    assert d.error is not None and "error rate" in d.error
    assert ("analyse", "failed") in names(d)
    assert "retire" not in [s.name for s in d.steps]
    assert w.dp.table.live == "blue"
    cur = w.state.current()
    assert (cur.live_colour, cur.live_release) == ("blue", "r-a")
    for _ in range(100):
        if not w.supervisor.instances("green"):
            break
        await asyncio.sleep(0.01)
    assert not w.supervisor.instances("green")
    assert len(w.supervisor.instances("blue")) == 2


async def test_rollback_while_warm_swaps_back_and_the_bad_release_is_never_previous(
    world: Any, tmp_path: Path
) -> None:
    w: World = await world(scale_down_delay=30)
    await done(w, await w.controller.start_deploy(DeployRequest(path=tmp_path / "a")))
    deploy_id = await w.controller.start_deploy(DeployRequest(path=tmp_path / "b"))
    await at_step(w, deploy_id, "retire")
    blue_before = [(i.id, i.port) for i in w.supervisor.instances("blue")]
    calls_before = len(w.hooks.calls)
    rolled_id, message = await w.controller.rollback()
    # Immediate: the warm colour is switched to, nothing is started and no hook runs
    # (counted, not timed: a busy machine makes any call slow).
    assert message == f"deploy #{deploy_id} rolled back: blue is live again"
    assert [(i.id, i.port) for i in w.supervisor.instances("blue")] == blue_before
    assert len(w.hooks.calls) == calls_before
    assert rolled_id == deploy_id and w.dp.table.live == "blue"
    assert (await done(w, deploy_id)).status == "rolled_back"
    cur = w.state.current()
    assert (cur.live_colour, cur.live_release, cur.previous_release) == ("blue", "r-a", None)

    # r-b was rolled back: a second rollback refuses it and says why.
    with pytest.raises(NothingToDo, match="r-b was rolled back"):
        await w.controller.rollback()

    # The next deploy's previous is r-a, the release that was live and good.
    new_id = await w.controller.start_deploy(DeployRequest(path=tmp_path / "c"))
    await at_step(w, new_id, "retire")
    cur = w.state.current()
    assert (cur.live_colour, cur.live_release, cur.previous_release) == ("green", "r-c", "r-a")


async def test_cold_rollback_goes_to_the_last_good_release_through_the_checks(
    world: Any, tmp_path: Path
) -> None:
    w: World = await world(scale_down_delay=0)
    await done(w, await w.controller.start_deploy(DeployRequest(path=tmp_path / "a")))
    assert (
        await done(w, await w.controller.start_deploy(DeployRequest(path=tmp_path / "b")))
    ).status == "succeeded"
    for _ in range(100):
        if not w.supervisor.instances("blue"):
            break
        await asyncio.sleep(0.01)
    assert not w.supervisor.instances("blue")

    cold_id, message = await w.controller.rollback()
    assert "r-a (the last good release)" in message and "smoke" in message
    cold = await done(w, cold_id)
    assert cold.status == "succeeded" and cold.source == "rollback"
    assert cold.release_id == "r-a"
    assert [s for s, _ in names(cold)] == [
        "start", "ready", "smoke", "switch", "drain", "analyse", "retire",
    ]  # fmt: skip
    assert w.dp.table.live == "blue"
    cur = w.state.current()
    # r-b was left by a rollback: it is not offered as "previous" again.
    assert (cur.live_release, cur.previous_release) == ("r-a", None)


async def test_cold_rollback_refused_across_a_contract_the_target_still_needs(
    tmp_path: Path,
) -> None:
    """The schema check before a rollback: a contract migration applied since the target's
    schema head blocks it unless the target is at or past the contract's safe_after."""
    from dataclasses import replace

    from bluegreen.controller import RollbackRefused
    from bluegreen.migrations import Plan

    base = make_config(tmp_path)
    config = parse_config(
        {**base.raw, "migrations": {"plan": "{python} plan --json"}},
        path=base.path,
        root=base.root,
        environ={},
    )
    router, sup, hooks = FakeDataPlane(), FakeSupervisor(), Hooks()
    state = StateStore(tmp_path / "state.sqlite3")
    ctl = make_controller(config, router, sup, state, hooks)
    history = ("0001", "0002", "0003")
    plan = Plan(
        current="0003",
        head="0003",
        history=history,
        phases={"0003": "contract"},
        revisions=(),
        safe_after={"0003": "0002"},
    )
    plans = {"r-a": replace(plan, head="0001"), "r-b": plan}

    async def fake_plan(release: Any, colour: Any) -> Plan:
        return plans[release.id]

    ctl.plane.migration_plan = fake_plan  # type: ignore[method-assign]
    await ctl.start()
    w = World(ctl, router, sup, state, hooks)
    try:
        for name in ("a", "b"):
            d = await done(w, await ctl.start_deploy(DeployRequest(path=tmp_path / name)))
            assert d.status == "succeeded", d
        assert state.release("r-a").migration_head == "0001"  # type: ignore[union-attr]
        # r-a (schema 0001) is before 0003's safe_after (0002): refused, blue stays down.
        with pytest.raises(RollbackRefused, match=r"r-a refused.*0003.*Fix forward"):
            await ctl.rollback()
        assert router.table.live == "green" and not sup.instances("blue")
        # Once the contract only removes what r-a no longer uses, the rollback goes ahead.
        plans["r-b"] = replace(plan, safe_after={"0003": "0001"})
        deploy_id, message = await ctl.rollback()
        assert "started" in message
        assert (await done(w, deploy_id)).status == "succeeded"
        assert router.table.live == "blue"
    finally:
        await ctl.close()
        state.close()


async def test_drain_tells_the_old_colour_to_go_away_when_connections_stay(
    world: Any, tmp_path: Path
) -> None:
    w: World = await world(scale_down_delay=5)
    await done(w, await w.controller.start_deploy(DeployRequest(path=tmp_path / "a")))
    blue = [i.id for i in w.supervisor.instances("blue")]
    w.dp.left_open = 3  # websockets still open on blue at the drain deadline
    deploy_id = await w.controller.start_deploy(DeployRequest(path=tmp_path / "b"))
    await at_step(w, deploy_id, "retire")
    d = w.state.deploy(deploy_id)
    assert d is not None
    drain = next(s for s in d.steps if s.name == "drain")
    assert "3 still open" in drain.output and "go away" in drain.output
    assert w.supervisor.recycled == blue  # told to go away, still there (warm)
    assert [i.id for i in w.supervisor.instances("blue")] == blue


async def test_daemon_stopping_mid_deploy_is_interrupted_not_cancelled(
    world: Any, tmp_path: Path
) -> None:
    w: World = await world()
    await done(w, await w.controller.start_deploy(DeployRequest(path=tmp_path / "a")))
    deploy_id = await w.controller.start_deploy(DeployRequest(path=tmp_path / "b", manual=True))
    await at_step(w, deploy_id, "approve")
    assert w.supervisor.instances("green")
    await w.controller.close()  # what SIGTERM of the daemon does
    d = w.state.deploy(deploy_id)
    assert d is not None and d.status == "interrupted", d
    assert d.error is not None and "interrupted during approve" in d.error
    assert "operator" not in d.error
    assert not w.supervisor.instances("green")
    assert w.dp.table.live == "blue" and w.dp.table.preview_colour() == "blue"
