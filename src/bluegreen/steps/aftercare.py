"""Steps after the switch: drain the old colour, analyse the new one against it, retire the
old one; and the swap back that an analysis breach or an operator rollback makes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from bluegreen.checks import AnalysisThresholds, BreachWatch, Stats, Verdict
from bluegreen.checks import analyse as judge
from bluegreen.dataplane.stats import ColourStats
from bluegreen.errors import StepFailed
from bluegreen.steps.context import DeployContext, Outcome
from bluegreen.traffic import to_stats

logger = logging.getLogger(__name__)


async def drain(ctx: DeployContext) -> Outcome:
    """Let the old colour's requests finish (bounded by ``timeouts.drain``)."""
    run, plane = ctx.run, ctx.plane
    previous = run.previous
    if previous is None:
        return "skipped", "nothing was live before"
    started = time.monotonic()
    draining = asyncio.create_task(plane.drain_colour(previous, ctx.config.timeouts.drain))
    rollback = asyncio.create_task(run.rollback_requested.wait())
    try:
        await asyncio.wait({draining, rollback}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        rollback.cancel()
        if not draining.done():
            draining.cancel()
        await asyncio.gather(draining, rollback, return_exceptions=True)
    if run.rollback_requested.is_set():
        run.rollback_reason = "rolled back by the operator during drain"
        await switch_back(ctx, run.rollback_reason)
        return "ok", "interrupted by a rollback"
    left = draining.result()
    return "ok", (
        f"{previous} drained in {time.monotonic() - started:.2f}s"
        + (f" ({left} still open; its instances were told to go away)" if left else "")
    )


async def analyse(ctx: DeployContext) -> Outcome:
    """Compare the new colour's traffic since the switch with the old colour's before it:
    at every ``analysis.check_interval`` while the window runs (a conclusive breach switches
    back at once), and over the whole window before passing."""
    run, plane = ctx.run, ctx.plane
    window = ctx.config.timeouts.analysis_window
    if run.previous is None:
        return "skipped", "first deploy: nothing to compare with or roll back to"
    if window <= 0:
        return "skipped", "analysis_window is 0"
    assert run.candidate_at_switch is not None
    thresholds = AnalysisThresholds.from_config(ctx.config.analysis)
    baseline = to_stats(run.baseline or ColourStats(colour=run.previous))
    watch = BreachWatch(thresholds)
    measured_from = run.candidate_at_switch  # where the next latency measurement starts
    while (remaining := run.switch_at + window - time.monotonic()) > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                run.rollback_requested.wait(), min(remaining, ctx.config.analysis.check_interval)
            )
        if run.rollback_requested.is_set():
            run.rollback_reason = "rolled back by the operator during analysis"
            await switch_back(ctx, run.rollback_reason)
            return "ok", "interrupted by a rollback"
        now = (await plane.sample()).of(run.target)
        candidate = now - run.candidate_at_switch
        recent: Stats | None = None
        if (now - measured_from).requests >= thresholds.min_requests:
            recent, measured_from = to_stats(now - measured_from), now
        breach = watch.look(baseline=baseline, candidate=to_stats(candidate), recent=recent)
        if breach is not None:
            after = time.monotonic() - run.switch_at
            raise StepFailed(
                f"analysis breached: {breach}",
                f"conclusive {after:.1f}s after the switch (window {window:g}s); "
                f"{candidate.server_errors} of {candidate.requests} user requests to "
                f"{run.target} had failed by then\n{breach}",
            )
    candidate = (await plane.sample()).of(run.target) - run.candidate_at_switch
    verdict: Verdict = judge(
        baseline=baseline, candidate=to_stats(candidate), thresholds=thresholds
    )
    figures = ", ".join(f"{k}={_fmt(v)}" for k, v in verdict.figures.items())
    if not verdict.ok:
        raise StepFailed(f"analysis breached: {verdict.reason}", f"{figures}\n{verdict.reason}")
    return "ok", f"{figures}\n{verdict.reason}"


async def retire(ctx: DeployContext) -> Outcome:
    """Keep the old colour warm for ``scale_down_delay`` (or until a new deploy), then stop
    it; an operator rollback meanwhile swaps back instead."""
    run, plane = ctx.run, ctx.plane
    if run.previous is None:
        return "skipped", "nothing was live before"
    delay = ctx.config.timeouts.scale_down_delay
    waits = [
        asyncio.create_task(run.rollback_requested.wait()),
        asyncio.create_task(run.retire_now.wait()),
    ]
    try:
        await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in waits:
            t.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
    if run.rollback_requested.is_set() and not run.retire_now.is_set():
        run.rollback_reason = "rolled back by the operator while the old colour was warm"
        await switch_back(ctx, run.rollback_reason)
        return "ok", "interrupted by a rollback"
    await plane.stop_colour(run.previous)
    why = "a new deploy started" if run.retire_now.is_set() else f"after {delay:g}s"
    return "ok", f"{run.previous} stopped ({why})"


async def switch_back(ctx: DeployContext, reason: str) -> None:
    """After the switch (or during a phased one): the old colour (drained, still running) is
    live again for everyone at once; the candidate is drained and stopped in the background."""
    run, plane = ctx.run, ctx.plane
    previous, target = run.previous, run.target
    assert previous is not None
    old_release = plane.state.current().colours.get(previous)
    await plane.route(lambda t: t.with_live(previous).with_preview(None).with_weights(None))
    if old_release is not None:
        rolled_back = run.release.id if run.release is not None else None
        plane.state.restore_live(previous, old_release, rolled_back=rolled_back)
    run.rolled_back.set()
    logger.warning("deploy #%s rolled back: %s", run.deploy_id, reason)

    async def retire_candidate() -> None:
        await plane.drain_colour(target, ctx.config.timeouts.drain)
        await plane.stop_colour(target)

    plane.spawn(retire_candidate(), name=f"bluegreen-retire-{target}")


def _fmt(value: float | int | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
