"""Rehearse a release's migrations on a scratch copy of the live schema, with the live release.

Plain async functions, usable without the daemon (a Kubernetes Job, a test, a script):

* :func:`create_scratch` / :func:`drop_scratch` run ``[migrations] scratch_create`` /
  ``scratch_drop``;
* :func:`rehearse_on` applies the new release's migrations to a scratch database and runs
  the live release (one instance, started through the given supervisor) and its smoke hook
  against it; around the migrations it counts the rows of a sample (the smoke accounts, and
  what ``[migrations] sample_seed`` makes the live release write) and fails when a table
  lost rows no contract migration declared (:mod:`bluegreen.dataguard`);
* :func:`rehearse` does all three, always dropping the scratch database it created.

Every failure is a :class:`~bluegreen.errors.StepFailed` whose output tells the story of the
rehearsal (what was done, then the failing command's output).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

import asyncpg

from bluegreen import dataguard
from bluegreen.config import Colour, Config
from bluegreen.errors import BluegreenError, ReadyTimeout, StepFailed
from bluegreen.hooks import HookRunner, capture, render, run_hook
from bluegreen.migrations import Plan, declarations
from bluegreen.release import Release
from bluegreen.state import OUTPUT_LIMIT

logger = logging.getLogger(__name__)

EnvFor = Callable[[Release, Colour], Mapping[str, str]]
"""The hook environment of a release deployed to a colour (without the database URL)."""

BROKE = "the migration would break the live release"
DESTROYS = "the migration would destroy the live release's data"


class RehearsalInstance(Protocol):
    """What the rehearsal reads of a started instance."""

    @property
    def url(self) -> str: ...


InstanceT = TypeVar("InstanceT", bound=RehearsalInstance)


class InstanceRunner(Protocol[InstanceT]):
    """What the rehearsal needs to run one live-release instance on the scratch database
    (:class:`bluegreen.supervisor.Supervisor` fits; it must not feed the routing table)."""

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
    ) -> InstanceT: ...

    async def wait_ready(self, instances: Sequence[InstanceT], timeout: float) -> None: ...  # noqa: ASYNC109

    async def stop_instance(self, inst: InstanceT, timeout: float = 10.0) -> None: ...  # noqa: ASYNC109


def story(lines: Sequence[str], output: str) -> str:
    """What the rehearsal did (``lines``, kept whole), then the failing command's output: its
    start and its end when it is too long (a smoke test's steps come first, its error last),
    so the result fits in :data:`~bluegreen.state.OUTPUT_LIMIT`."""
    head = "\n".join(lines)
    room = max(OUTPUT_LIMIT - len(head) - 1, 1000)
    if len(output) > room:
        keep = room - 1
        output = output[: keep // 3] + "…" + output[-(keep - keep // 3) :]
    return f"{head}\n{output}" if head else output


async def create_scratch(
    *, config: Config, release: Release, colour: Colour, env: Mapping[str, str]
) -> str:
    """Create a scratch database with the live schema (``scratch_create`` run from
    ``release``); return its URL (the command's last stdout line)."""
    mig = config.migrations
    assert mig is not None and mig.scratch_create is not None
    code, out, err = await capture(
        render(mig.scratch_create, release, colour),
        cwd=release.dir,
        env=env,
        timeout=config.timeouts.hook,
    )
    url = out.strip().splitlines()[-1] if out.strip() else ""
    if code != 0 or not url:
        raise StepFailed("could not create the scratch database", err or out)
    return url


async def drop_scratch(
    *, config: Config, release: Release, colour: Colour, env: Mapping[str, str], url: str
) -> bool:
    """Drop the scratch database at ``url``; whether the command succeeded (never raises)."""
    mig = config.migrations
    if mig is None or mig.scratch_drop is None:
        return False
    code, out, err = await capture(
        render(mig.scratch_drop, release, colour, url=url),
        cwd=release.dir,
        env=env,
        timeout=config.timeouts.hook,
    )
    if code != 0:
        logger.error("dropping the scratch database failed: %s", err or out)
    return code == 0


def _db_env(
    config: Config, env_for: EnvFor, release: Release, colour: Colour, url: str
) -> dict[str, str]:
    assert config.database is not None
    return {**env_for(release, colour), config.database.env: url}


async def rehearse_on(
    url: str,
    *,
    config: Config,
    new: Release,
    new_colour: Colour,
    live: Release,
    live_colour: Colour,
    env_for: EnvFor,
    runner: InstanceRunner[InstanceT],
    instance_id: str,
    lines: list[str],
    hook_runner: HookRunner = run_hook,
    plan: Plan | None = None,
) -> None:
    """On the scratch database at ``url``: the sample seeded and counted, the new release's
    migrate hook, the sample counted again, then the live release started on it and its smoke
    hook. ``plan``: the migrations being rehearsed (what they declare; asked of the new
    release on the scratch database when not given). Appends what it did to ``lines``."""
    if config.hooks.migrate is not None:
        await _migrate_checked(
            url,
            config=config,
            new=new,
            new_colour=new_colour,
            live=live,
            live_colour=live_colour,
            env_for=env_for,
            lines=lines,
            hook_runner=hook_runner,
            plan=plan,
        )
    smoke = config.hooks.smoke
    if smoke is None:
        lines.append("no smoke hook: the live release was not exercised")
        return
    env = _db_env(config, env_for, live, live_colour, url)
    app = config.app
    inst = await runner.start_instance(
        id=instance_id,
        colour=live_colour,
        release=live,
        command_for=lambda port: app.command.render(
            python=live.python,
            release=live.id,
            release_dir=live.dir,
            colour=live_colour,
            port=port,
        ),
        env=env,
        cwd=live.dir / app.workdir,
        live_path=app.live_path,
        ready_path=app.ready_path,
    )
    try:
        try:
            await runner.wait_ready([inst], config.timeouts.ready)
        except ReadyTimeout as exc:
            raise StepFailed(
                f"{BROKE}: it does not become ready on the new schema", story(lines, exc.message)
            ) from None
        lines.append(f"live release {live.id} started on the scratch database")
        result = await hook_runner(
            render(smoke, live, live_colour, base_url=inst.url),
            cwd=live.dir,
            env=env,
            timeout=config.timeouts.hook,
            log=lambda line: logger.info("[rehearse smoke] %s", line),
        )
        if not result.ok:
            raise StepFailed(
                f"{BROKE}: its smoke test fails on the new schema", story(lines, result.output)
            )
        lines.append(f"live release {live.id} passed its smoke test on the new schema")
    finally:
        await runner.stop_instance(inst)


async def rehearse(
    *,
    config: Config,
    new: Release,
    new_colour: Colour,
    live: Release,
    live_colour: Colour,
    env_for: EnvFor,
    runner: InstanceRunner[InstanceT],
    instance_id: str = "rehearsal",
    hook_runner: HookRunner = run_hook,
    on_scratch: Callable[[str | None], None] | None = None,
    plan: Plan | None = None,
) -> str:
    """Create a scratch database, :func:`rehearse_on` it, drop it; return what was done.

    ``on_scratch`` is told the scratch URL once it exists and ``None`` once it is dropped,
    so a caller can record it and drop it after a crash. Raises :class:`StepFailed`.
    """
    lines: list[str] = []
    env = env_for(new, new_colour)
    url = await create_scratch(config=config, release=new, colour=new_colour, env=env)
    if on_scratch is not None:
        on_scratch(url)
    lines.append("scratch database with the live schema created")
    try:
        await rehearse_on(
            url,
            config=config,
            new=new,
            new_colour=new_colour,
            live=live,
            live_colour=live_colour,
            env_for=env_for,
            runner=runner,
            instance_id=instance_id,
            lines=lines,
            hook_runner=hook_runner,
            plan=plan,
        )
    finally:
        dropped = await drop_scratch(
            config=config, release=new, colour=new_colour, env=env, url=url
        )
        if dropped and on_scratch is not None:
            on_scratch(None)
    return "\n".join(lines)


async def _migrate_checked(
    url: str,
    *,
    config: Config,
    new: Release,
    new_colour: Colour,
    live: Release,
    live_colour: Colour,
    env_for: EnvFor,
    lines: list[str],
    hook_runner: HookRunner,
    plan: Plan | None,
) -> None:
    """The new release's migrate hook on the scratch database, with the data check around it
    (on a PostgreSQL scratch database): the sample seeded and counted before, counted after."""
    migrate = config.hooks.migrate
    assert migrate is not None
    before: dict[str, int] | None = None
    if dataguard.is_postgres(url):
        if plan is None:
            plan = await _plan_on(url, config=config, new=new, colour=new_colour, env_for=env_for)
        lines.extend(declarations(plan) if plan is not None else [])
        before = await _sample(
            url,
            config=config,
            live=live,
            colour=live_colour,
            env_for=env_for,
            lines=lines,
            hook_runner=hook_runner,
        )
    result = await hook_runner(
        render(migrate, new, new_colour),
        cwd=new.dir,
        env=_db_env(config, env_for, new, new_colour, url),
        timeout=config.timeouts.hook,
        log=lambda line: logger.info("[rehearse migrate] %s", line),
    )
    if not result.ok:
        raise StepFailed(
            f"{BROKE}: the migration failed on the scratch database", story(lines, result.output)
        )
    lines.append("new release's migrations applied to the scratch database")
    if before is not None:
        verdict = dataguard.compare(before, await _count(url, lines), plan)
        if not verdict.ok:
            shown = ", ".join(f"{t} {b} -> {a} rows" for t, (b, a) in verdict.lost.items())
            raise StepFailed(f"{DESTROYS}: {shown}", story(lines, verdict.summary()))
        lines.append(verdict.summary())


# -- the data check ----------------------------------------------------------------------


async def _plan_on(
    url: str, *, config: Config, new: Release, colour: Colour, env_for: EnvFor
) -> Plan | None:
    """The new release's migration plan against the scratch database (still at the live
    revision): what its migrations declare. None when it cannot be had."""
    mig = config.migrations
    if mig is None:
        return None
    code, out, err = await capture(
        render(mig.plan, new, colour),
        cwd=new.dir,
        env=_db_env(config, env_for, new, colour, url),
        timeout=config.timeouts.hook,
    )
    try:
        return Plan.from_json(out) if code == 0 else None
    except BluegreenError:
        logger.warning("the migration plan for the data check is unreadable: %s", err or out)
        return None


async def _sample(
    url: str,
    *,
    config: Config,
    live: Release,
    colour: Colour,
    env_for: EnvFor,
    lines: list[str],
    hook_runner: HookRunner,
) -> dict[str, int]:
    """Seed the sample with the live release (``sample_seed``) and count its rows."""
    seed = dataguard.parse_settings(config.raw.get("migrations") or {}).sample_seed
    if seed is not None:
        result = await hook_runner(
            render(seed, live, colour),
            cwd=live.dir,
            env=_db_env(config, env_for, live, colour, url),
            timeout=config.timeouts.hook,
            log=lambda line: logger.info("[rehearse sample] %s", line),
        )
        if not result.ok:
            raise StepFailed(
                "could not seed the sample data on the scratch database "
                "(migrations.sample_seed, run with the live release)",
                story(lines, result.output),
            )
    counts = await _count(url, lines)
    what = "smoke accounts and the live release's sample_seed" if seed else "smoke accounts"
    lines.append(
        f"sample on the scratch database ({what}): {sum(counts.values())} rows "
        f"in {sum(1 for c in counts.values() if c)} of {len(counts)} tables"
    )
    return counts


async def _count(url: str, lines: list[str]) -> dict[str, int]:
    try:
        return await dataguard.count_rows(url)
    except (OSError, asyncpg.PostgresError) as exc:
        raise StepFailed(
            "the data check could not count the scratch database's rows", story(lines, str(exc))
        ) from None
