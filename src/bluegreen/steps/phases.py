"""The phased switch, between approval (or shadow) and the atomic switch: the new colour gets
``[switch] steps`` percent of NEW sessions in turn (Envoy's ``bg-colour`` cookie keeps each
browser on the colour it landed on), and at each step the new colour is compared with the
live one over the same ``step_window``, both serving users side by side.

* a conclusive breach (:class:`~bluegreen.checks.BreachWatch`) while a step runs, or a failed
  verdict (:func:`~bluegreen.checks.analyse`) at its end, sends everyone back to the live
  colour at once (the step fails; its policy swaps back);
* passing a step takes its whole window; a window with too few requests to the new colour
  for a verdict is extended (at most :data:`MAX_EXTENSIONS` times) before it passes as
  inconclusive, and the output says so;
* ``bluegreen promote`` skips the remaining steps (the atomic switch follows at once);
  ``bluegreen rollback`` ends the deploy back on the live colour.

The live colour never changes here: only the routing table's weights do. The ``switch`` step
then makes the new colour live for everyone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bluegreen.checks import AnalysisThresholds, BreachWatch, Stats, analyse
from bluegreen.config import Colour, SwitchConfig
from bluegreen.dataplane.stats import ColourStats
from bluegreen.dataplane.table import RoutingTable, Weights
from bluegreen.errors import StepFailed
from bluegreen.steps.aftercare import switch_back
from bluegreen.steps.context import DeployContext, Outcome
from bluegreen.traffic import Sample, to_stats

MAX_EXTENSIONS = 2
"""How many more windows a step waits for enough requests to the new colour."""


def describe(cfg: SwitchConfig) -> str:
    """``10% → 50% → 100%, each analysed 30s`` (``atomic`` for ``[100]``)."""
    if not cfg.phased:
        return "atomic"
    return " → ".join(f"{p}%" for p in cfg.steps) + f", each analysed {cfg.step_window:g}s"


@dataclass(slots=True)
class _Phase:
    """One step's window: the samples it started from, and what it saw so far."""

    percent: int
    started: float
    start: Sample
    lines: list[str] = field(default_factory=list)

    def window(self, now: Sample, candidate: Colour, live: Colour) -> tuple[ColourStats, ...]:
        """Both colours' traffic since the step started: ``(candidate, live)``."""
        return (
            now.of(candidate) - self.start.of(candidate),
            now.of(live) - self.start.of(live),
        )


async def phases(ctx: DeployContext) -> Outcome:
    """Walk ``[switch] steps`` below 100 %, analysing each; see the module's docstring."""
    cfg, run = ctx.config.switch, ctx.run
    if not cfg.phased:
        return "skipped", "atomic switch ([switch] steps = [100])"
    if run.previous is None:
        return "skipped", "first deploy: no live colour to share sessions with"
    lines = [describe(cfg) + ":"]
    for percent in cfg.phases:
        await ctx.plane.route(_weighted(Weights(run.target, percent)))
        ended = await _watch(ctx, percent, lines)
        if ended is not None:
            lines.append(ended)
            return "ok", "\n".join(lines)
    lines.append(f"100%: {run.target} gets every session now (switch)")
    return "ok", "\n".join(lines)


def _weighted(weights: Weights) -> Callable[[RoutingTable], RoutingTable]:
    """The routing change of one step: new sessions split by ``weights``, no preview."""
    return lambda t: t.with_preview(None).with_weights(weights)


async def _watch(ctx: DeployContext, percent: int, lines: list[str]) -> str | None:
    """Run one step's window; ``None`` when it passed, else how the phases ended early
    (promote, rollback). A breach raises :class:`StepFailed`."""
    run, plane = ctx.run, ctx.plane
    cfg, acfg = ctx.config.switch, ctx.config.analysis
    assert run.previous is not None
    thresholds = AnalysisThresholds.from_config(acfg)
    watch = BreachWatch(thresholds)
    phase = _Phase(percent, time.monotonic(), await plane.sample())
    measured_from = phase.start.of(run.target)
    deadline = phase.started + cfg.step_window
    extensions = 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            now = await plane.sample()
            cand, base = phase.window(now, run.target, run.previous)
            if cand.requests >= thresholds.min_requests or extensions >= MAX_EXTENSIONS:
                lines.append(_verdict(ctx, phase, cand, base, thresholds, lines, extensions))
                return None
            extensions += 1
            deadline += cfg.step_window
            continue
        signal = await _signal(ctx, min(remaining, acfg.check_interval))
        if signal == "rollback":
            run.rollback_reason = f"rolled back by the operator at the {percent}% step"
            await switch_back(ctx, run.rollback_reason)
            return f"{percent}%: interrupted by a rollback; everyone is back on {run.previous}"
        if signal == "promote":
            return f"{percent}%: promoted by the operator; the remaining steps are skipped"
        now = await plane.sample()
        cand, base = phase.window(now, run.target, run.previous)
        recent: Stats | None = None
        if (now.of(run.target) - measured_from).requests >= thresholds.min_requests:
            recent = to_stats(now.of(run.target) - measured_from)
            measured_from = now.of(run.target)
        breach = watch.look(baseline=to_stats(base), candidate=to_stats(cand), recent=recent)
        if breach is not None:
            after = time.monotonic() - phase.started
            raise StepFailed(
                f"phased switch breached at the {percent}% step: {breach}",
                "\n".join(
                    [
                        *lines,
                        f"{percent}%: conclusive {after:.1f}s into the step (window "
                        f"{cfg.step_window:g}s); {cand.server_errors} of {cand.requests} user "
                        f"requests to {run.target} had failed by then "
                        f"({base.server_errors} of {base.requests} to {run.previous})",
                        breach,
                    ]
                ),
            )


def _verdict(
    ctx: DeployContext,
    phase: _Phase,
    cand: ColourStats,
    base: ColourStats,
    thresholds: AnalysisThresholds,
    lines: list[str],
    extensions: int,
) -> str:
    """The step's verdict over its whole window: a line for the output, or StepFailed."""
    run = ctx.run
    verdict = analyse(baseline=to_stats(base), candidate=to_stats(cand), thresholds=thresholds)
    seconds = time.monotonic() - phase.started
    line = (
        f"{phase.percent}%: {seconds:.1f}s, {run.target} {cand.requests} requests "
        f"({cand.server_errors} 5xx{_p95(cand)}), {run.previous} {base.requests} requests "
        f"({base.server_errors} 5xx{_p95(base)}): {verdict.reason}"
        + (f" (window extended {extensions}x for lack of requests)" if extensions else "")
    )
    if not verdict.ok:
        raise StepFailed(
            f"phased switch breached at the {phase.percent}% step: {verdict.reason}",
            "\n".join([*lines, line]),
        )
    return line


async def _signal(ctx: DeployContext, timeout: float) -> str | None:  # noqa: ASYNC109
    """Wait up to ``timeout`` for an operator's rollback or promote; which came, if any."""
    run = ctx.run
    events = {"rollback": run.rollback_requested, "promote": run.skip_phases}
    waits = {asyncio.create_task(e.wait()): name for name, e in events.items()}
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
    return next((name for name, e in events.items() if e.is_set()), None)


def _p95(stats: ColourStats) -> str:
    q = stats.quantile(0.95)
    return "" if q is None else f", p95 {q * 1000:.0f}ms"
