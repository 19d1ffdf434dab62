"""Steps that bring the candidate colour up and make it live: prepare, start, ready, smoke,
approve, switch."""

from __future__ import annotations

import asyncio
import time

from bluegreen import identity
from bluegreen.dataplane.table import Identity
from bluegreen.errors import BluegreenError, ReadyTimeout, StepFailed
from bluegreen.steps.context import DeployContext, Outcome, instance_ids


async def prepare(ctx: DeployContext) -> Outcome:
    """Materialise the release (code and venv) and record it."""
    run, plane = ctx.run, ctx.plane
    assert run.request is not None
    lines: list[str] = []
    request = run.request
    try:
        release = await asyncio.to_thread(
            plane.preparer,
            source_repo=ctx.config.root if request.path is None else None,
            ref=request.ref if request.path is None else None,
            path=request.path,
            releases_dir=ctx.config.releases.dir,
            keep=ctx.config.releases.keep,
            python=plane.python,
            log=lines.append,
            protect=plane.state.current().protected_releases(),
        )
    except BluegreenError as exc:
        output = "\n".join([*lines, exc.message])
        raise StepFailed(f"prepare failed: {exc.message}", output) from None
    run.release = release
    plane.state.record_release(
        release.id, path=release.dir, venv_path=release.venv, deps_hash=release.deps_hash
    )
    plane.state.set_deploy_release(run.deploy_id, release.id)
    await plane.environment.ensure(release)
    lines.append(f"release {release.id} ready in {release.dir} (target colour {run.target})")
    return "ok", "\n".join(lines)


async def start(ctx: DeployContext) -> Outcome:
    """Start the candidate colour's instances (a rollback to a warm colour starts nothing)."""
    run = ctx.run
    if run.request is None and ctx.plane.warm(run.target, ctx.release.id):
        return "skipped", f"{run.target} still runs {ctx.release.id} (warm)"
    instances = await ctx.plane.start_colour(run.target, ctx.release, run.extra_env)
    return "ok", instance_ids(instances)


async def ready(ctx: DeployContext) -> Outcome:
    """Wait until every candidate instance answers its ready path."""
    supervisor = ctx.plane.supervisor
    instances = supervisor.instances(ctx.run.target)
    started = time.monotonic()
    try:
        await supervisor.wait_ready(instances, ctx.config.timeouts.ready)
    except ReadyTimeout as exc:
        raise StepFailed(f"ready failed: {exc.message.splitlines()[0]}", exc.message) from None
    return "ok", f"{len(instances)} instance(s) ready in {time.monotonic() - started:.1f}s"


async def smoke(ctx: DeployContext) -> Outcome:
    """Show the candidate on the preview listener, ask it who runs it (``[identity] url``)
    and run the smoke hook against it."""
    run = ctx.run
    await ctx.plane.route(lambda t: t.with_preview(run.target))
    base_url = ctx.plane.dataplane.urls().get("preview")
    told = await learn_identity(ctx, base_url)
    hook = ctx.config.hooks.smoke
    if hook is None:
        return "skipped", told + "no smoke hook configured"
    if base_url is None:
        return "skipped", told + "no preview listener: cannot smoke-test"
    return "ok", told + await ctx.hook("smoke", hook, ctx.release, run.target, base_url=base_url)


async def learn_identity(ctx: DeployContext, base_url: str | None) -> str:
    """What the candidate says about who runs it, kept in the routing table for the data
    plane's own pages once it is live; a line for the step's output ("" when not asked).
    A release that cannot say is not failed for it: the pages fall back to ``[identity]``."""
    path, target = ctx.config.dataplane.identity_url, ctx.run.target
    if not path or base_url is None:
        return ""
    try:
        who: Identity | None = await identity.ask(base_url, path)
        line = f"identity: {who.name} (from {path})\n" if who else ""
    except identity.IdentityError as exc:
        who, line = None, f"identity: {exc}; the data plane's pages use [identity]\n"
    await ctx.plane.route(lambda t: t.with_identity(target, who))
    return line


async def approve(ctx: DeployContext) -> Outcome:
    """Wait for ``bluegreen promote``."""
    started = time.monotonic()
    await ctx.run.approved.wait()
    return "ok", f"promoted after {time.monotonic() - started:.1f}s"


async def switch(ctx: DeployContext) -> Outcome:
    """Make the candidate live: routes only, confirmed applied by the data plane."""
    run, plane = ctx.run, ctx.plane
    sample = await plane.sample()
    if run.previous is not None:
        window = max(ctx.config.timeouts.analysis_window, 1.0)
        run.baseline = plane.traffic.baseline(run.previous, window)
    run.candidate_at_switch = sample.of(run.target)
    run.switch_at = time.monotonic()
    await plane.route(lambda t: t.with_live(run.target).with_preview(None).with_weights(None))
    if run.request is None:  # a rollback: the release it leaves never becomes "previous"
        left = plane.state.current().live_release
        plane.state.restore_live(run.target, ctx.release.id, rolled_back=left)
    else:
        plane.state.set_live(run.target, ctx.release.id)
    run.switched = True
    was = f"{run.previous} → " if run.previous else ""
    return "ok", f"live: {was}{run.target} ({ctx.release.id})"
