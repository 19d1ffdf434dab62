"""What a deploy step works with: the :class:`ControlPlane` (config, state store, supervisor,
data plane, hooks, environment — one per daemon) and the :class:`Run` of one deploy, joined in
a :class:`DeployContext`.

The control plane's operations are the ones several steps (and the controller) share:
starting and stopping a colour, changing routes, running a hook, reading the migration plan.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import sys
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from bluegreen.config import Colour, Config, Template
from bluegreen.dataplane.stats import ColourStats, Group
from bluegreen.dataplane.table import Backend, RoutingTable
from bluegreen.environment import Environment
from bluegreen.errors import StepFailed
from bluegreen.hooks import HookRunner, capture, render, run_hook
from bluegreen.migrations import Plan, ReleaseHead
from bluegreen.rehearsal import InstanceRunner
from bluegreen.release import Release, prepare_release
from bluegreen.state import StateStore
from bluegreen.supervisor import Instance
from bluegreen.traffic import Sample, StatsHistory

logger = logging.getLogger(__name__)

Outcome = tuple[Literal["ok", "skipped"], str]
"""What a step that did not fail returns: ``ok`` or ``skipped``, and its output."""

Preparer = Callable[..., Release]


class Step(enum.StrEnum):
    """Deploy steps, in order."""

    PREPARE = "prepare"
    LINT = "lint"
    REHEARSE = "rehearse"
    MIGRATE = "migrate"
    VERIFY = "verify"
    START = "start"
    READY = "ready"
    SMOKE = "smoke"
    SHADOW = "shadow"
    APPROVE = "approve"
    PHASES = "phases"
    SWITCH = "switch"
    DRAIN = "drain"
    ANALYSE = "analyse"
    RETIRE = "retire"


class DataPlane(Protocol):
    """What the control plane needs of the data plane (:class:`bluegreen.dataplane.envoy.Envoy`)."""

    @property
    def table(self) -> RoutingTable: ...

    async def apply(self, table: RoutingTable) -> None: ...

    async def stats(self) -> dict[Colour, ColourStats]: ...

    async def group_stats(self) -> dict[tuple[Colour, Group], ColourStats]: ...

    async def shadow_stats(self) -> dict[tuple[Colour, Group], ColourStats]: ...

    async def drain(self, colour: Colour, timeout: float) -> int: ...  # noqa: ASYNC109

    def urls(self) -> dict[str, str]: ...

    async def hot_restart(self) -> None: ...

    @property
    def pid(self) -> int | None: ...


class SupervisorLike(InstanceRunner[Instance], Protocol):
    """What the controller needs of :class:`bluegreen.supervisor.Supervisor`."""

    def instances(self, colour: Colour | None = None) -> list[Instance]: ...

    async def recycle(self, inst: Instance, timeout: float = 10.0) -> None: ...  # noqa: ASYNC109

    def adopt(
        self,
        *,
        id: str,
        colour: Colour,
        release: Release,
        pid: int,
        port: int,
        command_for: Callable[[int], Sequence[str]],
        env: Mapping[str, str],
        cwd: Path,
        live_path: str,
        ready_path: str,
    ) -> Instance: ...


@dataclass(slots=True)
class DeployRequest:
    """What to deploy: a git ``ref`` of the app repo (default HEAD), or a ``path``."""

    ref: str | None = None
    path: Path | None = None
    manual: bool = False
    env: Mapping[str, str] = field(default_factory=dict)  # extra env for this release only

    @property
    def source(self) -> str:
        """How the deploy is described in history."""
        return f"path:{self.path}" if self.path is not None else (self.ref or "HEAD")


@dataclass(slots=True)
class Run:
    """In-memory companion of the running deploy (the state store has its record)."""

    deploy_id: int
    target: Colour
    previous: Colour | None
    request: DeployRequest | None  # None: a rollback to ``release``
    release: Release | None = None
    step: Step | None = None
    switched: bool = False
    approved: asyncio.Event = field(default_factory=asyncio.Event)
    skip_phases: asyncio.Event = field(default_factory=asyncio.Event)
    """``bluegreen promote`` during a phased switch: go to 100 % now."""
    rollback_requested: asyncio.Event = field(default_factory=asyncio.Event)
    retire_now: asyncio.Event = field(default_factory=asyncio.Event)
    rolled_back: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled_by_operator: bool = False
    task: asyncio.Task[None] | None = None
    switch_at: float = 0.0
    candidate_at_switch: ColourStats | None = None
    baseline: ColourStats | None = None
    rollback_reason: str = ""
    migration_plan: Plan | None = None
    migrated: bool = False

    @property
    def extra_env(self) -> Mapping[str, str]:
        """The deploy's own extra env (none for a rollback)."""
        return self.request.env if self.request is not None else {}


@dataclass(eq=False)
class ControlPlane:
    """Everything a deploy works with, built once by the daemon; its methods are the
    operations steps and the controller share."""

    config: Config
    state: StateStore
    supervisor: SupervisorLike
    dataplane: DataPlane
    rehearsal_runner: InstanceRunner[Any]
    environment: Environment
    traffic: StatsHistory
    hook_runner: HookRunner = run_hook
    preparer: Preparer = prepare_release
    python: str = sys.executable
    stop_timeout: float = 10.0
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    route_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held while the data plane changes (routes, a hot restart)."""
    _background: set[asyncio.Task[Any]] = field(default_factory=set)

    # ------------------------------------------------------------------ releases

    def next_id(self) -> int:
        """A number unique in this daemon (instance and rehearsal ids)."""
        return next(self._ids)

    def new_instance_id(self, colour: Colour) -> str:
        """``colour-N``, never one an instance (this daemon's or an adopted one) has."""
        taken = {i.id for i in self.supervisor.instances()}
        taken |= {r.id for r in self.state.instances()}
        while (candidate := f"{colour}-{self.next_id()}") in taken:
            pass
        return candidate

    def release_from_state(self, release_id: str) -> Release | None:
        """The recorded release ``release_id`` if its directory still exists."""
        rec = self.state.release(release_id)
        if rec is None or not rec.path.is_dir():
            return None
        return Release(
            id=rec.id,
            dir=rec.path,
            python=rec.venv_path / "bin" / "python",
            deps_hash=rec.deps_hash,
            source="state",
            venv=rec.venv_path,
        )

    def live_release(self) -> Release | None:
        """The live release, if something is live and still on disk."""
        cur = self.state.current()
        return self.release_from_state(cur.live_release) if cur.live_release else None

    def rollback_candidates(self, new_release: str) -> list[ReleaseHead]:
        """The live release and every release still kept on disk for a rollback."""
        cur = self.state.current()
        heads = []
        for rec in self.state.releases():
            if rec.id == new_release or not rec.path.is_dir():
                continue
            why = "live" if rec.id == cur.live_release else "kept for rollback"
            heads.append(ReleaseHead(rec.id, rec.migration_head, why))
        return heads

    # ------------------------------------------------------------------ hooks

    def hook_env(self, release: Release, colour: Colour) -> dict[str, str]:
        """Environment for a hook of ``release`` deployed to ``colour``."""
        return self.environment.for_release(release, colour)

    async def hook(
        self,
        name: str,
        template: Template,
        release: Release,
        colour: Colour,
        *,
        env: Mapping[str, str] | None = None,
        **placeholders: object,
    ) -> str:
        """Run a hook; its output, or :class:`StepFailed` naming why it failed."""
        result = await self.hook_runner(
            render(template, release, colour, **placeholders),
            cwd=release.dir,
            env=env if env is not None else self.hook_env(release, colour),
            timeout=self.config.timeouts.hook,
            log=lambda line: logger.info("[%s] %s", name, line),
        )
        if not result.ok:
            why = "timed out" if result.timed_out else f"exited with code {result.exit_code}"
            raise StepFailed(f"{name} hook {why}", result.output or f"{name} hook {why}")
        return result.output

    async def migration_plan(self, release: Release, colour: Colour) -> Plan:
        """``[migrations] plan`` of ``release``: what it would migrate on the live database."""
        mig = self.config.migrations
        assert mig is not None
        code, out, err = await capture(
            render(mig.plan, release, colour),
            cwd=release.dir,
            env=self.hook_env(release, colour),
            timeout=self.config.timeouts.hook,
        )
        if code != 0:
            raise StepFailed(f"the migration plan command failed (exit {code})", err or out)
        return Plan.from_json(out)

    # ------------------------------------------------------------------ instances

    def warm(self, colour: Colour, release_id: str) -> bool:
        """Whether ``colour`` runs ``release_id``, every instance healthy."""
        instances = self.supervisor.instances(colour)
        return bool(instances) and all(i.release.id == release_id and i.healthy for i in instances)

    async def start_colour(
        self, colour: Colour, release: Release, extra_env: Mapping[str, str] | None = None
    ) -> list[Instance]:
        """Start ``[replicas]`` instances of ``release`` as ``colour`` (leftovers of that
        colour stopped first) and put them in the colour's cluster."""
        for inst in self.supervisor.instances(colour):
            await self.supervisor.stop_instance(inst, self.stop_timeout)
        return await self.add_instances(colour, release, self.config.replicas.of(colour), extra_env)

    async def add_instances(
        self,
        colour: Colour,
        release: Release,
        count: int,
        extra_env: Mapping[str, str] | None = None,
    ) -> list[Instance]:
        """Start ``count`` more instances of ``release`` as ``colour``, route to them."""
        app = self.config.app
        env = self.environment.for_release(release, colour, extra_env)

        def command_for(port: int) -> list[str]:
            return render(app.command, release, colour, port=port)

        started = [
            await self.supervisor.start_instance(
                id=self.new_instance_id(colour),
                colour=colour,
                release=release,
                command_for=command_for,
                env=env,
                cwd=release.dir / app.workdir,
                live_path=app.live_path,
                ready_path=app.ready_path,
            )
            for _ in range(count)
        ]
        self.state.set_colour_release(colour, release.id)
        await self.route()
        return started

    async def stop_colour(self, colour: Colour) -> None:
        """Stop every instance of ``colour``; it runs nothing any more unless it is live."""
        await asyncio.gather(
            *(
                self.supervisor.stop_instance(i, self.stop_timeout)
                for i in self.supervisor.instances(colour)
            )
        )
        if self.state.current().live_colour != colour:
            self.state.set_colour_release(colour, None)
        await self.route()

    # ------------------------------------------------------------------ routing

    def backends(self) -> tuple[Backend, ...]:
        """The supervised instances as routing backends. Health is the data plane's own
        (active checks, outlier detection): the supervisor does not push it into routing."""
        return tuple(
            Backend(id=i.id, colour=i.colour, host=i.host, port=i.port)
            for i in self.supervisor.instances()
        )

    async def route(self, change: Callable[[RoutingTable], RoutingTable] | None = None) -> None:
        """Apply ``change`` to the routing table, with the backends as supervised now; returns
        once the data plane confirms it applied the table. Changes are serialised."""
        async with self.route_lock:
            table = self.dataplane.table
            if change is not None:
                table = change(table)
            await self.dataplane.apply(table.with_backends(self.backends()))

    async def drain_colour(self, colour: Colour, timeout: float) -> int:  # noqa: ASYNC109
        """Wait up to ``timeout`` for ``colour``'s requests (and websockets) to end; the number
        still open after it. Those instances are then told to go away (their websockets
        close with a going-away code and clients reconnect, to the live colour)."""
        left = await self.dataplane.drain(colour, timeout)
        if left:
            await self.go_away(colour)
        return left

    async def go_away(self, colour: Colour) -> None:
        """Tell ``colour``'s instances to go away: each is stopped gracefully (SIGTERM: the app
        closes its websockets with a going-away code) and started again on its port, so the
        colour stays warm for a rollback with no connection left on it."""
        await asyncio.gather(
            *(
                self.supervisor.recycle(i, self.stop_timeout)
                for i in self.supervisor.instances(colour)
            )
        )

    async def sample(self) -> Sample:
        """Read the data plane's per-colour statistics into the traffic history."""
        sample = Sample(at=time.monotonic(), wall=time.time(), stats=await self.dataplane.stats())
        self.traffic.add(sample)
        return sample

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``coro`` in the background; :meth:`close` cancels it."""
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        """Cancel background work."""
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@dataclass(slots=True)
class DeployContext:
    """One deploy's view: the control plane and the run."""

    plane: ControlPlane
    run: Run

    @property
    def config(self) -> Config:
        return self.plane.config

    @property
    def release(self) -> Release:
        """The release being deployed (known from the prepare step on)."""
        assert self.run.release is not None, "no release before the prepare step"
        return self.run.release

    def env_for(self, release: Release, colour: Colour) -> dict[str, str]:
        """Environment of ``release`` on ``colour``; the deploy's own release also gets the
        deploy's extra env."""
        extra = self.run.extra_env if release is self.run.release else None
        return self.plane.environment.for_release(release, colour, extra)

    async def hook(
        self,
        name: str,
        template: Template,
        release: Release,
        colour: Colour,
        **placeholders: object,
    ) -> str:
        """:meth:`ControlPlane.hook` with :meth:`env_for`."""
        env = self.env_for(release, colour)
        return await self.plane.hook(name, template, release, colour, env=env, **placeholders)


def instance_ids(instances: Sequence[Instance]) -> str:
    """``id on port N`` lines."""
    return "\n".join(f"{i.id} on port {i.port}" for i in instances)
