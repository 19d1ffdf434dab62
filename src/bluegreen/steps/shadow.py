"""The shadow step, between smoke and switch: Envoy mirrors a share of the live colour's
safe reads to the candidate (its answers are discarded), and the candidate's figures on
those requests are compared with the live colour's over the same window, per route group
and overall. A breach aborts the deploy before any user sees the candidate.

The window opens after a warm-up that is not judged (:data:`WARMUP`, :data:`WARM_ROUNDS`):
a colour that just started is slow on its first requests, which the live colour is not.

Too little live traffic never passes: anonymous synthetic reads (``[shadow]
synthetic_paths``) are sent through the public listener, so the live colour answers them
and Envoy mirrors them like any other read, until there is enough to decide; the output
says how much of the sample was synthetic. They wait for the candidate's answers too
(:data:`AHEAD`), so that both colours answer them at the same pace.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time

import httpx

from bluegreen.checks import AnalysisThresholds, Verdict, analyse
from bluegreen.config import Colour, ShadowConfig
from bluegreen.dataplane.stats import GROUPS, ColourStats, Group
from bluegreen.dataplane.table import Shadow
from bluegreen.errors import StepFailed
from bluegreen.steps.context import DeployContext, Outcome
from bluegreen.traffic import to_stats

GroupStats = dict[tuple[Colour, Group], ColourStats]
SETTLE = 5.0
"""Seconds to wait for the mirrored answers still in flight to be counted."""
WARMUP = 2.0
"""Seconds of mirroring before the window opens (at most ``duration``), not judged: a colour
that just started answers its first requests slowly (templates compiled, connections
opened), which the live colour did long ago."""
WARM_ROUNDS = 3
"""Synthetic reads of each path per candidate instance during the warm-up, so that every
instance has answered every synthetic path before the window opens, traffic or not."""
AHEAD = 2
"""Synthetic reads sent that the candidate has not answered yet, at most: a read waits for
the live colour's answer and for the candidate's to the mirrored copies before it, so a
candidate that stalls a moment is not judged on a queue the live colour never had."""
PACE_TIMEOUT = 10.0
"""Seconds a synthetic read waits for the candidate's answers before it goes anyway."""


async def shadow(ctx: DeployContext) -> Outcome:
    """Mirror live reads to the candidate for ``[shadow] duration`` and compare."""
    cfg, run, plane = ctx.config.shadow, ctx.run, ctx.plane
    if cfg.share <= 0:
        return "skipped", "shadow.share is 0: no mirroring"
    live = run.previous
    if live is None:
        return "skipped", "first deploy: no live colour to mirror"
    dp = plane.dataplane
    await plane.route(lambda t: t.with_shadow(Shadow(run.target, cfg.share)))
    try:
        warm = await _warm_up(ctx, cfg)
        live0, shadow0 = await dp.group_stats(), await dp.shadow_stats()
        await asyncio.sleep(cfg.duration)
        mirrored = _total(_delta(await dp.shadow_stats(), shadow0), run.target).requests
        synthetic = 0
        if mirrored < cfg.min_requests and cfg.synthetic_paths:
            synthetic = await _top_up(ctx, cfg, shadow0)
        await _settle(ctx, shadow0)
        live_window = _delta(await dp.group_stats(), live0)
        shadow_window = _delta(await dp.shadow_stats(), shadow0)
    finally:
        with contextlib.suppress(Exception):
            await plane.route(lambda t: t.with_shadow(None))
    outcome, output = judge(cfg, live, run.target, live_window, shadow_window, synthetic)
    return outcome, f"{warm}\n{output}"


def judge(
    cfg: ShadowConfig,
    live: Colour,
    target: Colour,
    live_window: GroupStats,
    shadow_window: GroupStats,
    synthetic: int,
) -> Outcome:
    """The verdict on one window: per group and overall, candidate against live."""
    thresholds = AnalysisThresholds(
        max_error_rate=cfg.max_error_rate,
        max_p95_ratio=cfg.max_p95_ratio,
        min_p95_ms=cfg.min_p95_ms,
        min_requests=max(1, cfg.min_requests // 5),
    )
    rows: list[tuple[str, ColourStats, ColourStats]] = [
        (
            g,
            live_window.get((live, g), ColourStats(live)),
            shadow_window.get((target, g), ColourStats(target)),
        )
        for g in GROUPS
    ]
    overall = ("all", _total(live_window, live), _total(shadow_window, target))
    table = _table(live, target, [*rows, overall])
    n = overall[2].requests
    real = max(0, n - synthetic)
    sample = f"{n} mirrored requests: {real} from users, {min(synthetic, n)} synthetic"
    if n < cfg.min_requests:
        raise StepFailed(
            f"shadow: only {n} mirrored requests (need {cfg.min_requests}); not passing on "
            "too little data",
            f"{table}\n{sample}",
        )
    breaches = []
    for name, base, cand in [*rows, overall]:
        verdict: Verdict = analyse(
            baseline=to_stats(base), candidate=to_stats(cand), thresholds=thresholds
        )
        if not verdict.ok:
            breaches.append(f"{name}: {verdict.reason}")
    if breaches:
        raise StepFailed(
            f"shadow breached: {breaches[0]}", f"{table}\n{sample}\n" + "\n".join(breaches)
        )
    return "ok", f"{table}\n{sample}"


async def _warm_up(ctx: DeployContext, cfg: ShadowConfig) -> str:
    """Mirroring is on: warm the candidate up before the window opens (:data:`WARMUP`,
    :data:`WARM_ROUNDS`); what was done, for the output."""
    started = time.monotonic()
    rounds = WARM_ROUNDS * ctx.config.replicas.of(ctx.run.target)
    sent = 0
    if cfg.synthetic_paths:
        async with Synthetic(ctx) as reads:
            for path in [p for _ in range(rounds) for p in cfg.synthetic_paths]:
                await reads.read(path)
            sent = reads.sent
    await asyncio.sleep(max(0.0, min(WARMUP, cfg.duration) - (time.monotonic() - started)))
    return f"warm-up, not judged: {time.monotonic() - started:.1f}s of mirroring" + (
        f" with {sent} synthetic reads" if sent else ""
    )


class Synthetic:
    """Anonymous reads through the public listener, where the live colour answers and Envoy
    mirrors them, paced on both colours (:data:`AHEAD`)."""

    def __init__(self, ctx: DeployContext) -> None:
        self.dp, self.target = ctx.plane.dataplane, ctx.run.target
        base = self.dp.urls()["public"]
        self.http = httpx.AsyncClient(base_url=base, timeout=10, trust_env=False)
        self.sent = 0
        self.answered_before = 0  # the candidate's mirrored answers before the first read
        self.answered = 0  # since then, as last seen

    async def __aenter__(self) -> Synthetic:
        self.answered_before = await self._answers()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    async def read(self, path: str) -> None:
        """GET ``path`` once the candidate is at most :data:`AHEAD` answers behind."""
        deadline = time.monotonic() + PACE_TIMEOUT
        while self.sent - self.answered > AHEAD and time.monotonic() < deadline:
            self.answered = await self._answers() - self.answered_before
            if self.sent - self.answered > AHEAD:
                await asyncio.sleep(0.02)
        with contextlib.suppress(httpx.HTTPError):
            await self.http.get(path, headers={"User-Agent": "bluegreen-shadow-synthetic"})
        self.sent += 1

    async def _answers(self) -> int:
        return _total(await self.dp.shadow_stats(), self.target).requests


async def _top_up(ctx: DeployContext, cfg: ShadowConfig, shadow0: GroupStats) -> int:
    """Synthetic reads of ``synthetic_paths`` until enough are mirrored (at most four times
    ``min_requests``); how many were sent."""
    dp, target = ctx.plane.dataplane, ctx.run.target
    async with Synthetic(ctx) as reads:
        for path in itertools.cycle(cfg.synthetic_paths):
            if reads.sent >= 4 * cfg.min_requests:
                break
            if reads.sent % 10 == 0:
                got = _total(_delta(await dp.shadow_stats(), shadow0), target).requests
                if got >= cfg.min_requests:
                    break
            await reads.read(path)
    return reads.sent


async def _settle(ctx: DeployContext, shadow0: GroupStats) -> None:
    """Until the count of mirrored answers stops growing (bounded by :data:`SETTLE`)."""
    dp, target = ctx.plane.dataplane, ctx.run.target
    deadline = time.monotonic() + SETTLE
    last = -1
    while time.monotonic() < deadline:
        n = _total(_delta(await dp.shadow_stats(), shadow0), target).requests
        if n == last:
            return
        last = n
        await asyncio.sleep(0.2)


def _delta(now: GroupStats, before: GroupStats) -> GroupStats:
    return {k: v - before[k] if k in before else v for k, v in now.items()}


def _total(stats: GroupStats, colour: Colour) -> ColourStats:
    total = ColourStats(colour)
    for (c, _), s in stats.items():
        if c == colour:
            total = total + s
    return total


def _table(live: Colour, target: Colour, rows: list[tuple[str, ColourStats, ColourStats]]) -> str:
    def ms(s: ColourStats, q: float) -> str:
        v = s.quantile(q)
        return "-" if v is None else f"{v * 1000:.0f}"

    head = (
        f"{'group':8} {'requests':>15} {'5xx %':>13} {'p50 ms':>11} {'p95 ms':>11} {'p99 ms':>11}"
    )
    lines = [f"{live} (live) / {target} (shadow)", head]
    for name, a, b in rows:
        lines.append(
            f"{name:8} {a.requests:>7}/{b.requests:<7} "
            f"{a.error_rate() * 100:>6.2f}/{b.error_rate() * 100:<6.2f} "
            f"{ms(a, 0.5):>5}/{ms(b, 0.5):<5} {ms(a, 0.95):>5}/{ms(b, 0.95):<5} "
            f"{ms(a, 0.99):>5}/{ms(b, 0.99):<5}"
        )
    return "\n".join(lines)
