"""Steps that change the shared schema safely: lint, rehearse, migrate, verify
(docs/migrations.md)."""

from __future__ import annotations

import asyncio
import logging

from bluegreen import rehearsal
from bluegreen.errors import StepFailed
from bluegreen.hooks import HookResult, render, squawk_executable
from bluegreen.migrations import check_contracts
from bluegreen.migrations import lint as lint_plan
from bluegreen.steps.context import DeployContext, Outcome

logger = logging.getLogger(__name__)


async def lint(ctx: DeployContext) -> Outcome:
    """Lint what the release would migrate (squawk and the expand/contract rules)."""
    mig = ctx.config.migrations
    if mig is None:
        return "skipped", "no [migrations] configured"
    run, plane = ctx.run, ctx.plane
    plan = await plane.migration_plan(ctx.release, run.target)
    run.migration_plan = plan
    plane.state.set_migration_head(ctx.release.id, plan.head)
    pending = ", ".join(f"{m.revision} ({m.phase})" for m in plan.revisions) or "none"
    squawk_cfg = ctx.release.dir / mig.squawk_config
    findings = await asyncio.to_thread(
        lint_plan,
        plan,
        squawk_executable=squawk_executable(),
        squawk_config=squawk_cfg if squawk_cfg.is_file() else None,
    )
    refusals = check_contracts(plan, plane.rollback_candidates(ctx.release.id))
    if findings or refusals:
        report = "\n".join([f.render() for f in findings] + [r.render() for r in refusals])
        what = "lint failed" if findings else "contract migration refused"
        problems = [f"{f.revision} {f.rule}" for f in findings]
        problems += [f"{r.revision} contract still needed" for r in refusals]
        raise StepFailed(
            f"migration {what}: nothing was migrated",
            f"migrations to run: {pending}\n{report}\n"
            f"{len(problems)} problem(s), nothing was migrated: {', '.join(problems)}",
        )
    return "ok", f"database at {plan.current or 'empty'}; migrations to run: {pending}; clean"


async def rehearse(ctx: DeployContext) -> Outcome:
    """The migrations on a scratch copy of the live schema, with the live release on it."""
    mig = ctx.config.migrations
    run, plane = ctx.run, ctx.plane
    if mig is None or mig.scratch_create is None or mig.scratch_drop is None:
        return "skipped", "no scratch database configured"
    if run.migration_plan is None or not run.migration_plan.revisions:
        return "skipped", "no migrations to run"
    live = plane.live_release()
    if live is None or run.previous is None:
        return "skipped", "nothing is live: no release to break"
    output = await rehearsal.rehearse(
        config=ctx.config,
        new=ctx.release,
        new_colour=run.target,
        live=live,
        live_colour=run.previous,
        env_for=ctx.env_for,
        runner=plane.rehearsal_runner,
        instance_id=f"rehearsal-{plane.next_id()}",
        hook_runner=plane.hook_runner,
        on_scratch=lambda url: plane.state.set_scratch(run.deploy_id, url),
    )
    return "ok", output


async def migrate(ctx: DeployContext) -> Outcome:
    """The release's migrate hook on the shared database (expand only)."""
    hook = ctx.config.hooks.migrate
    if hook is None:
        return "skipped", "no migrate hook configured"
    ctx.run.migrated = True  # from here on, an interruption may have left it applied
    plan = ctx.run.migration_plan
    if plan is not None:  # what recovery undoes if the daemon dies from here on
        ctx.plane.state.set_migrate_from(ctx.run.deploy_id, plan.current or "")
    output = await ctx.hook("migrate", hook, ctx.release, ctx.run.target)
    return "ok", output


async def verify(ctx: DeployContext) -> Outcome:
    """The live release's smoke test again, on the migrated schema; a failure downgrades."""
    run, plane = ctx.run, ctx.plane
    plan, smoke = run.migration_plan, ctx.config.hooks.smoke
    live = plane.live_release()
    if not run.migrated or plan is None or not plan.revisions:
        return "skipped", "no migrations ran"
    if live is None or run.previous is None or smoke is None:
        return "skipped", "nothing live to verify (or no smoke hook)"
    base_url = plane.dataplane.urls().get("public")
    if base_url is None:
        return "skipped", "no public listener to reach the live colour"
    previous = run.previous

    async def live_smoke() -> HookResult:
        return await plane.hook_runner(
            render(smoke, live, previous, base_url=base_url),
            cwd=live.dir,
            env=ctx.env_for(live, previous),
            timeout=ctx.config.timeouts.hook,
            log=lambda line: logger.info("[verify] %s", line),
        )

    first = await live_smoke()
    if first.ok:
        return "ok", f"live release {live.id} passes its smoke test on the migrated schema"
    lines = [f"live release {live.id} FAILED its smoke test on the migrated schema:", first.output]
    mig = ctx.config.migrations
    if mig is None or mig.downgrade is None:
        raise StepFailed(
            "the live release fails on the migrated schema (no downgrade hook)", "\n".join(lines)
        )
    down_ok, down_lines = await downgrade(ctx)
    lines += down_lines
    again = await live_smoke()
    lines.append(f"live release smoke test after the downgrade: {'ok' if again.ok else 'FAILED'}")
    raise StepFailed(
        "the live release fails on the migrated schema; "
        + ("migrations downgraded" if down_ok else "downgrade FAILED"),
        "\n".join(lines),
    )


async def downgrade(ctx: DeployContext) -> tuple[bool, list[str]]:
    """Undo what this deploy migrated (``[migrations] downgrade`` to the revision before it):
    what a failed verify does, and what recovery does for a deploy interrupted after its
    migrate step."""
    mig, plan = ctx.config.migrations, ctx.run.migration_plan
    if mig is None or mig.downgrade is None:
        return False, ["no [migrations] downgrade hook: the migration stays applied"]
    target = (plan.current if plan is not None else None) or "base"
    result = await ctx.plane.hook_runner(
        render(mig.downgrade, ctx.release, ctx.run.target, revision=target),
        cwd=ctx.release.dir,
        env=ctx.env_for(ctx.release, ctx.run.target),
        timeout=ctx.config.timeouts.hook,
        log=lambda line: logger.info("[downgrade] %s", line),
    )
    return result.ok, [f"downgrade to {target}: {'ok' if result.ok else 'FAILED'}", result.output]
