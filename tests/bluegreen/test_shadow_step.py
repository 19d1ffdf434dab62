"""The shadow step with a data plane whose statistics the test writes: the candidate's
answers to mirrored reads are compared with the live colour's, a slower candidate is refused
before the switch, too little data never passes, and synthetic reads top up a quiet window."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from test_controller import (
    FakeDataPlane,
    FakeSupervisor,
    Hooks,
    World,
    done,
    make_config,
    make_controller,
    names,
)

from bluegreen.config import Colour, ShadowConfig
from bluegreen.dataplane.stats import BUCKETS, STATUS_CLASSES, ColourStats, Group, bucket_index
from bluegreen.errors import StepFailed
from bluegreen.state import StateStore
from bluegreen.steps import DeployRequest
from bluegreen.steps.shadow import judge

Key = tuple[Colour, Group]


def stats(colour: Colour, n: int, seconds: float, errors: int = 0) -> ColourStats:
    buckets = [0] * (len(BUCKETS) + 1)
    buckets[bucket_index(seconds)] = n
    by_class = {"2xx": n - errors, "5xx": errors}
    return ColourStats(
        colour=colour,
        requests=n,
        by_class=tuple((c, by_class.get(c, 0)) for c in STATUS_CLASSES),
        buckets=tuple(buckets),
        latency_sum=n * seconds,
    )


class ShadowPlane(FakeDataPlane):
    """Each read of the live statistics while a shadow is on stands for ``per_look`` user reads
    of pages: answered by the live colour in ``live_s`` and, mirrored, by the shadow target
    in ``shadow_s``. ``url`` (when set) is the public listener: a GET there is one more read,
    answered and mirrored the same way."""

    def __init__(
        self, live_s: float, shadow_s: float, per_look: int, shadow_5xx: int = 0, cold: int = 0
    ) -> None:
        super().__init__()
        self.cold = cold  # the target's first reads take 0.5 s (a cold start)
        self.live_s, self.shadow_s, self.per_look, self.shadow_5xx = (
            live_s,
            shadow_s,
            per_look,
            shadow_5xx,
        )
        self.live: dict[Key, ColourStats] = {}
        self.mirrored: dict[Key, ColourStats] = {}
        self.url: str | None = None
        self.shadows_seen: list[Any] = []

    async def apply(self, table: Any) -> None:
        self.shadows_seen.append(table.shadow)
        await super().apply(table)

    def read(self, n: int) -> None:
        shadow, live = self.table.shadow, self.table.live
        if shadow is None or live is None or n == 0:
            return
        key: Key = (live, "pages")
        self.live[key] = self.live.get(key, ColourStats(live)) + stats(live, n, self.live_s)
        skey: Key = (shadow.target, "pages")
        cold, self.cold = min(n, self.cold), self.cold - min(n, self.cold)
        answered = stats(shadow.target, n - cold, self.shadow_s, errors=min(n, self.shadow_5xx))
        if cold:
            answered = answered + stats(shadow.target, cold, 0.5)
        self.mirrored[skey] = self.mirrored.get(skey, ColourStats(shadow.target)) + answered

    async def group_stats(self) -> dict[Key, ColourStats]:
        self.read(self.per_look)
        return dict(self.live)

    async def shadow_stats(self) -> dict[Key, ColourStats]:
        return dict(self.mirrored)

    def urls(self) -> dict[str, str]:
        return {**super().urls(), **({"public": self.url} if self.url else {})}


@contextlib.asynccontextmanager
async def public_listener(dp: ShadowPlane) -> AsyncIterator[list[str]]:
    """A public listener for ``dp``: each GET is one more read of the live colour, mirrored;
    yields the paths read."""
    seen: list[str] = []

    async def page(request: web.Request) -> web.Response:
        seen.append(request.path)
        dp.read(1)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    dp.url = f"http://127.0.0.1:{port}"
    try:
        yield seen
    finally:
        await runner.cleanup()


async def make_world(tmp_path: Path, dp: ShadowPlane, **shadow: Any) -> World:
    config = make_config(tmp_path)
    config = dataclasses.replace(config, shadow=ShadowConfig(share=1.0, duration=0.1, **shadow))
    sup, hooks = FakeSupervisor(), Hooks()
    state = StateStore(tmp_path / "state.sqlite3")
    ctl = make_controller(config, dp, sup, state, hooks)
    await ctl.start()
    return World(ctl, dp, sup, state, hooks)


@pytest.fixture
async def worlds() -> AsyncIterator[list[World]]:
    made: list[World] = []
    yield made
    for w in made:
        await w.controller.close()
        w.state.close()


async def two_deploys(w: World, tmp_path: Path) -> Any:
    await done(w, await w.controller.start_deploy(DeployRequest(path=tmp_path / "a")))
    return await done(w, await w.controller.start_deploy(DeployRequest(path=tmp_path / "b")), 30)


async def test_a_candidate_as_fast_as_live_passes_and_the_figures_are_in_history(
    tmp_path: Path, worlds: list[World]
) -> None:
    dp = ShadowPlane(live_s=0.02, shadow_s=0.02, per_look=60)
    w = await make_world(tmp_path, dp, min_requests=50)
    worlds.append(w)
    d = await two_deploys(w, tmp_path)
    assert d.status == "succeeded", d
    step = next(s for s in d.steps if s.name == "shadow")
    assert step.status == "ok"
    assert "blue (live) / green (shadow)" in step.output and "p95 ms" in step.output
    assert "from users, 0 synthetic" in step.output
    # Mirroring was on during the step and off before the switch.
    assert any(s is not None and s.target == "green" for s in dp.shadows_seen)
    assert dp.table.shadow is None and dp.table.live == "green"


async def test_a_candidate_300ms_slower_is_refused_before_the_switch(
    tmp_path: Path, worlds: list[World]
) -> None:
    dp = ShadowPlane(live_s=0.02, shadow_s=0.32, per_look=60)
    w = await make_world(tmp_path, dp, min_requests=50)
    worlds.append(w)
    d = await two_deploys(w, tmp_path)
    assert d.status == "failed", d
    assert ("shadow", "failed") in names(d) and "switch" not in [s for s, _ in names(d)]
    assert d.error is not None and "shadow breached" in d.error and "p95" in d.error
    step = next(s for s in d.steps if s.name == "shadow")
    assert "p95 ms" in step.output  # the side-by-side table
    assert dp.table.live == "blue" and dp.table.shadow is None
    assert w.state.current().live_release == "r-a"


async def test_too_little_traffic_never_passes(tmp_path: Path, worlds: list[World]) -> None:
    dp = ShadowPlane(live_s=0.02, shadow_s=0.02, per_look=0)
    w = await make_world(tmp_path, dp, min_requests=50)
    worlds.append(w)
    d = await two_deploys(w, tmp_path)
    assert d.status == "failed", d
    assert d.error is not None and "not passing on too little data" in d.error
    assert dp.table.live == "blue"


async def test_a_quiet_window_is_topped_up_with_synthetic_reads_and_says_so(
    tmp_path: Path, worlds: list[World]
) -> None:
    dp = ShadowPlane(live_s=0.02, shadow_s=0.02, per_look=0)
    async with public_listener(dp) as seen:
        w = await make_world(tmp_path, dp, min_requests=30, synthetic_paths=("/", "/doctors"))
        worlds.append(w)
        d = await two_deploys(w, tmp_path)
    assert d.status == "succeeded", d
    step = next(s for s in d.steps if s.name == "shadow")
    assert "0 from users" in step.output and "synthetic" in step.output
    assert set(seen) == {"/", "/doctors"} and len(seen) >= 30


async def test_a_cold_start_is_warmed_up_not_judged(tmp_path: Path, worlds: list[World]) -> None:
    # No user traffic; the candidate's first 8 reads are slow, then it is as fast as live.
    # Judged, they were a breach: in the end-to-end proof, an unchanged release was refused
    # with green's pages p95 at 500 ms against blue's 250 (templates compiled on the first
    # synthetic reads, 2 paths x 2 instances).
    dp = ShadowPlane(live_s=0.02, shadow_s=0.02, per_look=0, cold=8)
    async with public_listener(dp) as seen:
        w = await make_world(tmp_path, dp, min_requests=50, synthetic_paths=("/", "/doctors"))
        worlds.append(w)
        d = await two_deploys(w, tmp_path)
    assert d.status == "succeeded", d
    step = next(s for s in d.steps if s.name == "shadow")
    # 3 rounds of both paths for each of green's 2 instances, before the window opened.
    assert "warm-up, not judged" in step.output and "with 12 synthetic reads" in step.output
    assert seen[:12] == ["/", "/doctors"] * 6 and dp.cold == 0


class LaggingPlane(ShadowPlane):
    """The candidate answers the mirrored copy of a read late: one answer each time its
    statistics are read. ``behind``: its unanswered reads, after each read."""

    def __init__(self) -> None:
        super().__init__(live_s=0.02, shadow_s=0.02, per_look=0)
        self.queued = 0
        self.behind: list[int] = []

    def read(self, n: int) -> None:
        shadow, live = self.table.shadow, self.table.live
        if shadow is None or live is None or n == 0:
            return
        key: Key = (live, "pages")
        self.live[key] = self.live.get(key, ColourStats(live)) + stats(live, n, self.live_s)
        self.queued += n
        self.behind.append(self.queued)

    async def shadow_stats(self) -> dict[Key, ColourStats]:
        shadow = self.table.shadow
        if self.queued and shadow is not None:
            self.queued -= 1
            key: Key = (shadow.target, "pages")
            answer = stats(shadow.target, 1, self.shadow_s)
            self.mirrored[key] = self.mirrored.get(key, ColourStats(shadow.target)) + answer
        return dict(self.mirrored)


async def test_synthetic_reads_wait_for_the_candidates_answers(
    tmp_path: Path, worlds: list[World]
) -> None:
    # The live colour answers at once, the candidate late. Sent as fast as the live colour
    # answers, the reads piled up on the candidate, which was then judged on a queue the
    # live colour never had (end to end: green's p95 over a second against blue's 90 ms).
    dp = LaggingPlane()
    async with public_listener(dp) as seen:
        w = await make_world(tmp_path, dp, min_requests=30, synthetic_paths=("/", "/doctors"))
        worlds.append(w)
        d = await two_deploys(w, tmp_path)
    assert d.status == "succeeded", d
    assert len(seen) >= 30 + 12  # the warm-up, then the window's top-up
    assert max(dp.behind) <= 3, dp.behind  # AHEAD (2) unanswered, then the one sent


def test_errors_on_the_mirrored_reads_are_a_breach() -> None:
    cfg = ShadowConfig(share=1.0, min_requests=50)
    live = {("blue", "pages"): stats("blue", 200, 0.02)}
    shadow = {("green", "pages"): stats("green", 200, 0.02, errors=20)}
    with pytest.raises(StepFailed, match="error rate"):
        judge(cfg, "blue", "green", live, shadow, synthetic=0)  # type: ignore[arg-type]
    fine = {("green", "pages"): stats("green", 200, 0.02)}
    outcome = judge(cfg, "blue", "green", live, fine, synthetic=50)  # type: ignore[arg-type]
    assert outcome[0] == "ok" and "150 from users, 50 synthetic" in outcome[1]


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"share": 1.5}, "shadow.share: a fraction"),
        ({"duration": 0}, "shadow.duration"),
        ({"synthetic_paths": ["doctors"]}, "shadow.synthetic_paths"),
        ({"shares": 0.5}, "shares"),
    ],
)
def test_bad_shadow_settings_name_the_key(
    tmp_path: Path, section: dict[str, Any], message: str
) -> None:
    from bluegreen.config import parse_config
    from bluegreen.errors import ConfigError

    data = {"app": {"name": "t", "command": "{python} app.py --port {port}"}, "shadow": section}
    with pytest.raises(ConfigError, match=message):
        parse_config(data, path=tmp_path / "b.toml", root=tmp_path, environ={})
