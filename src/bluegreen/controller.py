"""The deploy state machine: prepare → lint → rehearse → migrate → verify → start → ready →
smoke → approve → switch → drain → analyse → retire.

Promises:

* the step order and what a failure of each step means are pure data
  (:func:`plan`, :func:`failure_policy`), testable without I/O;
* every step is recorded in the state store *before* it runs and finished with its output;
* before the switch, a failure stops the candidate colour and leaves the live colour
  serving untouched (deploy ``failed``; ``aborted`` when cancelled by the operator);
* after the switch, a breached analysis (or an operator rollback while the old colour
  is still warm) swaps the old colour back at once (deploy ``rolled_back``);
* exactly one colour is live at any time once something was deployed; the state store
  and the router always agree on which.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import itertools
import logging
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bluegreen import rehearsal
from bluegreen.checks import AnalysisThresholds, Stats, Verdict, analyse
from bluegreen.config import Colour, Config
from bluegreen.dataplane.stats import ColourStats
from bluegreen.dataplane.table import Backend, Mode, RoutingTable
from bluegreen.errors import BluegreenError, DeployInProgress, ReadyTimeout, StepFailed
from bluegreen.hooks import HookResult, HookRunner, capture, run_hook, squawk_executable
from bluegreen.migrations import Plan, ReleaseHead, check_contracts, lint, rollback_blockers
from bluegreen.release import Release, prepare_release
from bluegreen.state import Deploy, DeployStatus, StateStore, tail
from bluegreen.supervisor import Instance, Supervisor

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- pure part


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
    APPROVE = "approve"
    SWITCH = "switch"
    DRAIN = "drain"
    ANALYSE = "analyse"
    RETIRE = "retire"


class OnFailure(enum.Enum):
    """What a failing step means for the deploy."""

    ABORT = "abort"  # before the switch: stop the candidate, live colour untouched
    ROLL_BACK = "roll_back"  # after the switch: old colour live again at once
    CONTINUE = "continue"  # the candidate is live and fine; note the failure and go on


_POLICY: dict[Step, OnFailure] = {
    Step.PREPARE: OnFailure.ABORT,
    Step.LINT: OnFailure.ABORT,
    Step.REHEARSE: OnFailure.ABORT,
    Step.MIGRATE: OnFailure.ABORT,
    Step.VERIFY: OnFailure.ABORT,  # after undoing the migration it just applied
    Step.START: OnFailure.ABORT,
    Step.READY: OnFailure.ABORT,
    Step.SMOKE: OnFailure.ABORT,
    Step.APPROVE: OnFailure.ABORT,
    Step.SWITCH: OnFailure.ABORT,  # the swap is atomic: if it raised, nothing switched
    Step.DRAIN: OnFailure.CONTINUE,
    Step.ANALYSE: OnFailure.ROLL_BACK,
    Step.RETIRE: OnFailure.CONTINUE,
}


def failure_policy(step: Step) -> OnFailure:
    """What to do when ``step`` fails."""
    return _POLICY[step]


def plan(*, manual: bool, rollback: bool = False) -> tuple[Step, ...]:
    """The steps a deploy goes through, in order.

    A rollback re-runs the previous release: it is neither prepared nor migrated
    (its code must work with the newer schema) nor analysed (it was live before).
    Steps that have nothing to do (no hook, nothing live before) are still listed and
    recorded as ``skipped``.
    """
    if rollback:
        return (Step.START, Step.READY, Step.SWITCH, Step.DRAIN, Step.RETIRE)
    steps = [Step.PREPARE, Step.LINT, Step.REHEARSE, Step.MIGRATE, Step.VERIFY]
    steps += [Step.START, Step.READY, Step.SMOKE]
    if manual:
        steps.append(Step.APPROVE)
    steps += [Step.SWITCH, Step.DRAIN, Step.ANALYSE, Step.RETIRE]
    return tuple(steps)


def other_colour(colour: Colour) -> Colour:
    """The colour that is not ``colour``."""
    return "green" if colour == "blue" else "blue"


def target_colour(live: Colour | None) -> Colour:
    """Where the next deploy goes: blue first, then always the colour that is not live."""
    return "blue" if live is None else other_colour(live)


def final_status(failed: Step | None, policy: OnFailure | None, *, cancelled: bool) -> DeployStatus:
    """The deploy's final status given the step that failed (if any) and its policy."""
    if failed is None or policy is OnFailure.CONTINUE:
        return "succeeded"
    if policy is OnFailure.ROLL_BACK:
        return "rolled_back"
    return "aborted" if cancelled else "failed"


def window_baseline(
    ring: Sequence[tuple[float, ColourStats]], now_stats: ColourStats, now: float, window: float
) -> ColourStats:
    """``colour``'s traffic over the last ``window`` seconds, from a ring of
    ``(time, cumulative snapshot)`` samples (oldest first): ``now - sample``, where the
    sample is the newest one at least ``window`` old (or the oldest one there is)."""
    base: ColourStats | None = None
    for at, snap in ring:
        if at <= now - window:
            base = snap
        else:
            break
    if base is None:
        base = ring[0][1] if ring else ColourStats(colour=now_stats.colour)
    return now_stats - base


def to_stats(stats: ColourStats) -> Stats:
    """Router figures in the shape :func:`checks.analyse` takes."""
    return Stats(requests=stats.requests, errors_5xx=stats.server_errors, p95_seconds=stats.p95())


def table_from(
    table: RoutingTable, instances: Sequence[tuple[str, Colour, str, int, bool]]
) -> RoutingTable:
    """``table`` with its backends replaced by ``(id, colour, host, port, healthy)``."""
    return table.with_backends(
        tuple(Backend(id=i, colour=c, host=h, port=p, healthy=ok) for i, c, h, p, ok in instances)
    )


# --------------------------------------------------------------------------- I/O part


class RouterLike(Protocol):
    """What the controller needs of :class:`bluegreen.router.Router`."""

    @property
    def table(self) -> RoutingTable: ...

    @property
    def preview_port(self) -> int | None: ...

    @property
    def metrics(self) -> Any: ...

    def swap(self, table: RoutingTable) -> None: ...

    async def drain(self, colour: Colour, timeout: float) -> None: ...  # noqa: ASYNC109


class SupervisorLike(Protocol):
    """What the controller needs of :class:`bluegreen.supervisor.Supervisor`."""

    def instances(self, colour: Colour | None = None) -> list[Instance]: ...

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
    ) -> Instance: ...

    async def stop_instance(self, inst: Instance, timeout: float = 10.0) -> None: ...  # noqa: ASYNC109

    async def wait_ready(self, instances: Sequence[Instance], timeout: float) -> None: ...  # noqa: ASYNC109

    def mark_failed(self, instance_id: str) -> None: ...


Preparer = Callable[..., Release]
EnvProvider = Callable[[Release], Awaitable[Mapping[str, str]]]


class RollbackRefused(BluegreenError):
    """The schema is no longer compatible with the release to roll back to."""

    code = "rollback_refused"


class NothingToDo(BluegreenError):
    """The operation does not apply now (nothing awaits approval, nothing to roll back...)."""

    code = "conflict"


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
class _Run:
    """In-memory companion of the running deploy."""

    deploy_id: int
    target: Colour
    previous: Colour | None
    request: DeployRequest | None
    rollback_release: Release | None = None
    release: Release | None = None
    step: Step | None = None
    switched: bool = False
    approved: asyncio.Event = field(default_factory=asyncio.Event)
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


class Controller:
    """Runs deploys and rollbacks against an injected router, supervisor and state store.

    Call :meth:`start` once (it recovers from an interrupted previous run and restarts
    the live colour), then :meth:`start_deploy`, :meth:`promote`, :meth:`rollback`,
    :meth:`set_mode`; :meth:`close` cancels what runs. :meth:`rebuild` is the
    supervisor's ``on_change`` callback; :meth:`backend_failed` the router's
    ``on_backend_error``.
    """

    def __init__(
        self,
        *,
        config: Config,
        router: RouterLike,
        supervisor: SupervisorLike,
        state: StateStore,
        python: str = sys.executable,
        env_provider: EnvProvider | None = None,
        preparer: Preparer = prepare_release,
        hook_runner: HookRunner = run_hook,
        sample_interval: float = 1.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.config = config
        self.router = router
        self.supervisor = supervisor
        self.state = state
        self.python = python
        self._env_provider = env_provider
        self._prepare = preparer
        self._run_hook = hook_runner
        self.sample_interval = sample_interval
        self.stop_timeout = stop_timeout
        self._run: _Run | None = None
        self._lock = asyncio.Lock()  # serialises starting deploys/rollbacks
        self._counter = itertools.count(1)
        self._ring: dict[Colour, deque[tuple[float, ColourStats]]] = {
            "blue": deque(maxlen=4096),
            "green": deque(maxlen=4096),
        }
        self._sampler: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._extra_env: dict[str, str] = {}

    # ------------------------------------------------------------------ routing

    def rebuild(self) -> None:
        """Rebuild the routing table's backends from the supervised instances' health."""
        instances = [
            (i.id, i.colour, i.host, i.port, i.healthy) for i in self.supervisor.instances()
        ]
        self.router.swap(table_from(self.router.table, instances))

    def backend_failed(self, backend: Backend) -> None:
        """The router could not connect to ``backend``: out of rotation at once."""
        self.supervisor.mark_failed(backend.id)
        self.rebuild()

    def set_mode(self, mode: Mode) -> None:
        """``serving``, ``paused`` (hold requests) or ``maintenance`` (maintenance page)."""
        self.router.swap(self.router.table.with_mode(mode))

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> Deploy | None:
        """Abort an interrupted deploy, then serve what the state store says is live.

        Returns the aborted deploy, if there was one.
        """
        aborted = self.state.abort_interrupted("the daemon stopped while the deploy ran")
        cur = self.state.current()
        # The other colour ran nothing we still supervise.
        for colour in ("blue", "green"):
            if colour != cur.live_colour and cur.colours.get(colour) is not None:
                self.state.set_colour_release(colour, None)
        if self._sampler is None:
            self._sampler = asyncio.create_task(self._sample_forever(), name="bluegreen-sampler")
        if cur.live_colour is not None and cur.live_release is not None:
            release = self.release_from_state(cur.live_release)
            if release is None:
                logger.error("live release %s is gone from disk; nothing served", cur.live_release)
                return aborted
            await self._ensure_env(release)
            instances = await self._start_colour(cur.live_colour, release)
            self.router.swap(self.router.table.with_live(cur.live_colour).with_preview(None))
            try:
                await self.supervisor.wait_ready(instances, self.config.timeouts.ready)
            except ReadyTimeout as exc:
                # Keep them supervised: they are all we have; the supervisor keeps trying.
                logger.error("live colour %s not ready after restart: %s", cur.live_colour, exc)
        return aborted

    async def close(self) -> None:
        """Cancel the running deploy (recorded aborted) and background work."""
        run = self._run
        if run is not None and run.task is not None:
            run.cancelled_by_operator = True
            run.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await run.task
        for task in [self._sampler, *self._background]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._sampler = None

    @property
    def running(self) -> _Run | None:
        """The running deploy's in-memory record, if any."""
        return self._run

    async def wait_idle(self) -> None:
        """Return once no deploy runs."""
        run = self._run
        if run is not None and run.task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.shield(run.task)

    # ------------------------------------------------------------------ operations

    async def start_deploy(self, request: DeployRequest) -> int:
        """Begin a deploy in the background; return its id.

        A deploy that only waits to retire its old colour is finished first (old colour
        stopped now); any other running deploy raises :class:`DeployInProgress`.
        """
        async with self._lock:
            await self._finish_retiring()
            live = self.state.current().live_colour
            deploy_id = self.state.begin_deploy(request.source, request.source, request.manual)
            run = _Run(
                deploy_id=deploy_id, target=target_colour(live), previous=live, request=request
            )
            self._launch(run)
            return deploy_id

    async def promote(self) -> int:
        """Approve the manual deploy waiting in its approve step."""
        run = self._run
        if run is None or run.step is not Step.APPROVE:
            raise NothingToDo("no deploy is waiting for approval")
        run.approved.set()
        return run.deploy_id

    async def rollback(self) -> tuple[int, str]:
        """Back to the previous release; return ``(deploy id, what happened)``.

        * a deploy before its switch is cancelled (the live colour never changed);
        * after its switch, while the old colour is warm, the old colour is live again at
          once (this returns after the swap);
        * otherwise the previous release is started on the other colour, then switched to
          (in the background: this returns the rollback deploy's id).
        """
        run = self._run
        if run is not None:
            if not run.switched:
                run.cancelled_by_operator = True
                assert run.task is not None
                run.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.shield(run.task)
                return run.deploy_id, f"deploy #{run.deploy_id} cancelled before its switch"
            if run.request is not None and run.previous is not None:
                previous = self.state.current().colours.get(run.previous)
                if previous is not None:
                    # The deploy's own plan says what it migrated: no process to start, so
                    # the warm rollback stays instant.
                    known = run.migration_plan
                    if known is not None and run.migrated:
                        known = dataclasses.replace(known, current=known.head)
                    await self.check_rollback(previous, plan=known)
                run.rollback_requested.set()
                await run.rolled_back.wait()
                return run.deploy_id, (
                    f"deploy #{run.deploy_id} rolled back: {run.previous} is live again"
                )
            raise DeployInProgress(run.deploy_id, run.release.id if run.release else "?")
        async with self._lock:
            cur = self.state.current()
            if cur.previous_release is None or cur.live_colour is None:
                raise NothingToDo("nothing to roll back to: there is no previous release")
            release = self.release_from_state(cur.previous_release)
            if release is None:
                raise NothingToDo(f"previous release {cur.previous_release} is gone from disk")
            await self.check_rollback(release.id)
            deploy_id = self.state.begin_deploy(release.id, "rollback")
            run = _Run(
                deploy_id=deploy_id,
                target=other_colour(cur.live_colour),
                previous=cur.live_colour,
                request=None,
                rollback_release=release,
                release=release,
            )
            self._launch(run)
            return deploy_id, f"rollback #{deploy_id} to {release.id} started"

    async def check_rollback(self, release_id: str, *, plan: Plan | None = None) -> None:
        """Refuse a rollback to ``release_id`` when a contract migration applied since its
        schema head removed something it uses (nothing to check without ``[migrations]``).
        ``plan``: the live release's migration plan when already known."""
        cur = self.state.current()
        if self.config.migrations is None or cur.live_release is None:
            return
        target = self.state.release(release_id)
        live = self.release_from_state(cur.live_release)
        if target is None or live is None:
            return
        plan_ = plan or await self._migration_plan(live, cur.live_colour or "blue")
        blockers = rollback_blockers(plan_, target_head=target.migration_head)
        if blockers:
            raise RollbackRefused(
                f"rollback to {release_id} refused: the schema is no longer compatible with it ("
                + "; ".join(blockers)
                + "). Fix forward: deploy a new release instead."
            )

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

    # ------------------------------------------------------------------ internals

    def _launch(self, run: _Run) -> None:
        self._run = run
        run.task = asyncio.create_task(self._execute(run), name=f"bluegreen-deploy-{run.deploy_id}")

    async def _finish_retiring(self) -> None:
        run = self._run
        if run is None:
            return
        if run.step is Step.RETIRE:
            run.retire_now.set()
            assert run.task is not None
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.shield(run.task)
            return
        release = run.release.id if run.release else run.request.source if run.request else "?"
        raise DeployInProgress(run.deploy_id, release)

    def _env(self, release: Release, colour: Colour) -> dict[str, str]:
        env = {**self.config.app.env, **self._extra_env}
        if self.config.state.dir_env:
            env[self.config.state.dir_env] = str(self.config.state.dir)
        run = self._run
        if run is not None and run.request is not None and run.release is release:
            env.update(run.request.env)
        env.update(
            {"BLUEGREEN_RELEASE": release.id, "BLUEGREEN_COLOUR": colour, "BLUEGREEN_COLOR": colour}
        )
        return env

    def hook_env(self, release: Release, colour: Colour) -> dict[str, str]:
        """Environment for a hook of ``release`` deployed to ``colour``."""
        return {**release.env(), **self._env(release, colour)}

    async def _ensure_env(self, release: Release) -> None:
        if self._env_provider is not None:
            self._extra_env.update(await self._env_provider(release))

    async def _start_colour(
        self, colour: Colour, release: Release, env: Mapping[str, str] | None = None
    ) -> list[Instance]:
        # Leftovers on the target colour (a failed stop, a previous run) must go first.
        for inst in self.supervisor.instances(colour):
            await self.supervisor.stop_instance(inst, self.stop_timeout)
        app = self.config.app
        instance_env = dict(env) if env is not None else self._env(release, colour)

        def command_for(port: int) -> list[str]:
            return app.command.render(
                python=release.python,
                release=release.id,
                release_dir=release.dir,
                colour=colour,
                port=port,
            )

        started = []
        for _ in range(self.config.replicas.of(colour)):
            started.append(
                await self.supervisor.start_instance(
                    id=f"{colour}-{next(self._counter)}",
                    colour=colour,
                    release=release,
                    command_for=command_for,
                    env=instance_env,
                    cwd=release.dir / app.workdir,
                    live_path=app.live_path,
                    ready_path=app.ready_path,
                )
            )
        self.state.set_colour_release(colour, release.id)
        self.rebuild()
        return started

    async def _stop_colour(self, colour: Colour) -> None:
        await asyncio.gather(
            *(
                self.supervisor.stop_instance(i, self.stop_timeout)
                for i in self.supervisor.instances(colour)
            )
        )
        if self.state.current().live_colour != colour:
            self.state.set_colour_release(colour, None)
        self.rebuild()

    async def _sample_forever(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.sample_interval)

    def sample(self) -> None:
        """Append a cumulative snapshot of both colours to the ring (for window diffs)."""
        now = time.monotonic()
        for colour in ("blue", "green"):
            self._ring[colour].append((now, self.router.metrics.snapshot(colour)))

    async def _execute(self, run: _Run) -> None:
        steps = plan(
            manual=run.request.manual if run.request else False,
            rollback=run.request is None,
        )
        failed: Step | None = None
        policy: OnFailure | None = None
        error: str | None = None
        cancelled = False
        try:
            for step in steps:
                run.step = step
                self.state.step_started(run.deploy_id, step.value)
                try:
                    outcome, output = await self._do(step, run)
                except StepFailed as exc:
                    self.state.step_finished(run.deploy_id, step.value, "failed", tail(exc.output))
                    failed, policy, error = step, failure_policy(step), exc.message
                    if policy is OnFailure.CONTINUE:
                        continue
                    break
                self.state.step_finished(run.deploy_id, step.value, outcome, tail(output))
                if run.rollback_reason:  # an operator rollback during analyse/retire
                    failed, policy, error = step, OnFailure.ROLL_BACK, run.rollback_reason
                    break
        except asyncio.CancelledError:
            cancelled = True
            failed = run.step
            policy = failure_policy(run.step) if run.step else OnFailure.ABORT
            error = (
                f"cancelled by the operator during {run.step}"
                if run.cancelled_by_operator
                else f"interrupted during {run.step}"
            )
        except Exception as exc:  # a bug or an unexpected I/O error: treat as step failure
            logger.exception("deploy #%s: step %s crashed", run.deploy_id, run.step)
            failed = run.step
            policy = failure_policy(run.step) if run.step else OnFailure.ABORT
            error = f"{run.step} crashed: {type(exc).__name__}: {exc}"
        status = final_status(failed, policy, cancelled=cancelled)
        try:
            if policy is OnFailure.ABORT and failed is not None:
                await self._abort(run)
            elif (
                policy is OnFailure.ROLL_BACK
                and failed is not None
                and not run.rolled_back.is_set()
            ):
                await self._switch_back(run, error or "rolled back")
        finally:
            self.state.finish_deploy(
                run.deploy_id, status, error if status != "succeeded" else None
            )
            run.rolled_back.set()
            if self._run is run:
                self._run = None
        if cancelled and not run.cancelled_by_operator:
            raise asyncio.CancelledError

    async def _abort(self, run: _Run) -> None:
        """Before the switch: candidate stopped, preview back to the live colour."""
        self.router.swap(self.router.table.with_preview(None))
        await asyncio.shield(self._stop_colour(run.target))

    async def _switch_back(self, run: _Run, reason: str) -> None:
        """After the switch: the old colour (drained, still running) is live again at once."""
        assert run.previous is not None
        old_release = self.state.current().colours.get(run.previous)
        self.router.swap(self.router.table.with_live(run.previous).with_preview(None))
        if old_release is not None:
            self.state.set_live(run.previous, old_release)
        run.rolled_back.set()
        logger.warning("deploy #%s rolled back: %s", run.deploy_id, reason)

        async def retire_candidate() -> None:
            await self.router.drain(run.target, self.config.timeouts.drain)
            await self._stop_colour(run.target)

        task = asyncio.create_task(retire_candidate())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ------------------------------------------------------------------ the steps

    async def _do(self, step: Step, run: _Run) -> tuple[Any, str]:
        handler = getattr(self, f"_step_{step.value}")
        result: tuple[Any, str] = await handler(run)
        return result

    async def _step_prepare(self, run: _Run) -> tuple[Any, str]:
        assert run.request is not None
        lines: list[str] = []
        cur = self.state.current()
        try:
            release = await asyncio.to_thread(
                self._prepare,
                source_repo=self.config.root if run.request.path is None else None,
                ref=run.request.ref if run.request.path is None else None,
                path=run.request.path,
                releases_dir=self.config.releases.dir,
                keep=self.config.releases.keep,
                python=self.python,
                log=lines.append,
                protect=cur.protected_releases(),
            )
        except BluegreenError as exc:
            output = "\n".join([*lines, exc.message])
            raise StepFailed(f"prepare failed: {exc.message}", output) from None
        run.release = release
        self.state.record_release(
            release.id, path=release.dir, venv_path=release.venv, deps_hash=release.deps_hash
        )
        self.state.set_deploy_release(run.deploy_id, release.id)
        await self._ensure_env(release)
        lines.append(f"release {release.id} ready in {release.dir} (target colour {run.target})")
        return "ok", "\n".join(lines)

    async def _hook(self, run: _Run, name: str, argv: list[str]) -> str:
        assert run.release is not None
        result = await self._run_hook(
            argv,
            cwd=run.release.dir,
            env=self.hook_env(run.release, run.target),
            timeout=self.config.timeouts.hook,
            log=lambda line: logger.info("[%s] %s", name, line),
        )
        if not result.ok:
            why = "timed out" if result.timed_out else f"exited with code {result.exit_code}"
            raise StepFailed(f"{name} hook {why}", result.output or f"{name} hook {why}")
        return result.output

    async def _capture(
        self, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str]
    ) -> tuple[int, str, str]:
        return await capture(argv, cwd=cwd, env=env, timeout=self.config.timeouts.hook)

    def _render(
        self, template: Any, release: Release, colour: Colour, **extra: object
    ) -> list[str]:
        argv: list[str] = template.render(
            python=release.python,
            release=release.id,
            release_dir=release.dir,
            colour=colour,
            **extra,
        )
        return argv

    async def _migration_plan(
        self, release: Release, colour: Colour, env: Mapping[str, str] | None = None
    ) -> Plan:
        mig = self.config.migrations
        assert mig is not None
        code, out, err = await self._capture(
            self._render(mig.plan, release, colour),
            cwd=release.dir,
            env=env if env is not None else self.hook_env(release, colour),
        )
        if code != 0:
            raise StepFailed(f"the migration plan command failed (exit {code})", err or out)
        return Plan.from_json(out)

    def _rollback_candidates(self, new_release: str) -> list[ReleaseHead]:
        """The live release and every release still kept on disk for a rollback."""
        cur = self.state.current()
        heads = []
        for rec in self.state.releases():
            if rec.id == new_release or not rec.path.is_dir():
                continue
            why = "live" if rec.id == cur.live_release else "kept for rollback"
            heads.append(ReleaseHead(rec.id, rec.migration_head, why))
        return heads

    async def _step_lint(self, run: _Run) -> tuple[Any, str]:
        mig = self.config.migrations
        if mig is None:
            return "skipped", "no [migrations] configured"
        assert run.release is not None
        plan_ = await self._migration_plan(run.release, run.target)
        run.migration_plan = plan_
        self.state.set_migration_head(run.release.id, plan_.head)
        pending = ", ".join(f"{m.revision} ({m.phase})" for m in plan_.revisions) or "none"
        squawk_cfg = run.release.dir / mig.squawk_config
        findings = await asyncio.to_thread(
            lint,
            plan_,
            squawk_executable=squawk_executable(),
            squawk_config=squawk_cfg if squawk_cfg.is_file() else None,
        )
        refusals = check_contracts(plan_, self._rollback_candidates(run.release.id))
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
        return "ok", f"database at {plan_.current or 'empty'}; migrations to run: {pending}; clean"

    async def _step_rehearse(self, run: _Run) -> tuple[Any, str]:
        mig = self.config.migrations
        plan_ = run.migration_plan
        if mig is None or mig.scratch_create is None or mig.scratch_drop is None:
            return "skipped", "no scratch database configured"
        if plan_ is None or not plan_.revisions:
            return "skipped", "no migrations to run"
        live = self._live_release()
        if live is None or run.previous is None:
            return "skipped", "nothing is live: no release to break"
        assert run.release is not None
        runner = Supervisor(on_change=lambda: None, log_dir=self.config.state.logs_dir)
        try:
            output = await rehearsal.rehearse(
                config=self.config,
                new=run.release,
                new_colour=run.target,
                live=live,
                live_colour=run.previous,
                env_for=self.hook_env,
                runner=runner,
                instance_id=f"rehearsal-{next(self._counter)}",
                hook_runner=self._run_hook,
            )
        finally:
            await runner.stop_all()
        return "ok", output

    def _live_release(self) -> Release | None:
        cur = self.state.current()
        return self.release_from_state(cur.live_release) if cur.live_release else None

    async def _step_verify(self, run: _Run) -> tuple[Any, str]:
        plan_ = run.migration_plan
        smoke = self.config.hooks.smoke
        live = self._live_release()
        if not run.migrated or plan_ is None or not plan_.revisions:
            return "skipped", "no migrations ran"
        if live is None or run.previous is None or smoke is None:
            return "skipped", "nothing live to verify (or no smoke hook)"
        base_url = self._listener_url(self.config.listen.public.host, self._public_port())
        if base_url is None:
            return "skipped", "no public listener to reach the live colour"

        async def live_smoke() -> HookResult:
            assert run.previous is not None and live is not None
            return await self._run_hook(
                self._render(smoke, live, run.previous, base_url=base_url),
                cwd=live.dir,
                env=self.hook_env(live, run.previous),
                timeout=self.config.timeouts.hook,
                log=lambda line: logger.info("[verify] %s", line),
            )

        first = await live_smoke()
        if first.ok:
            return "ok", f"live release {live.id} passes its smoke test on the migrated schema"
        lines = [
            f"live release {live.id} FAILED its smoke test on the migrated schema:",
            first.output,
        ]
        mig = self.config.migrations
        if mig is None or mig.downgrade is None:
            raise StepFailed(
                "the live release fails on the migrated schema (no downgrade hook)",
                "\n".join(lines),
            )
        assert run.release is not None
        target = plan_.current or "base"
        down = await self._run_hook(
            self._render(mig.downgrade, run.release, run.target, revision=target),
            cwd=run.release.dir,
            env=self.hook_env(run.release, run.target),
            timeout=self.config.timeouts.hook,
            log=lambda line: logger.info("[downgrade] %s", line),
        )
        lines += [f"downgrade to {target}: {'ok' if down.ok else 'FAILED'}", down.output]
        again = await live_smoke()
        lines.append(
            f"live release smoke test after the downgrade: {'ok' if again.ok else 'FAILED'}"
        )
        raise StepFailed(
            "the live release fails on the migrated schema; migrations downgraded"
            if down.ok
            else "the live release fails on the migrated schema; downgrade FAILED",
            "\n".join(lines),
        )

    def _public_port(self) -> int | None:
        port = getattr(self.router, "public_port", None)
        return int(port) if port is not None else None

    @staticmethod
    def _listener_url(host: str, port: int | None) -> str | None:
        if port is None:
            return None
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"

    async def _step_migrate(self, run: _Run) -> tuple[Any, str]:
        hook = self.config.hooks.migrate
        if hook is None:
            return "skipped", "no migrate hook configured"
        assert run.release is not None
        argv = hook.render(
            python=run.release.python,
            release=run.release.id,
            release_dir=run.release.dir,
            colour=run.target,
        )
        output = await self._hook(run, "migrate", argv)
        run.migrated = True
        return "ok", output

    async def _step_start(self, run: _Run) -> tuple[Any, str]:
        assert run.release is not None
        if run.request is None and self._warm(run.target, run.release.id):
            return "skipped", f"{run.target} still runs {run.release.id} (warm)"
        instances = await self._start_colour(run.target, run.release)
        return "ok", "\n".join(f"{i.id} on port {i.port}" for i in instances)

    async def _step_ready(self, run: _Run) -> tuple[Any, str]:
        instances = self.supervisor.instances(run.target)
        started = time.monotonic()
        try:
            await self.supervisor.wait_ready(instances, self.config.timeouts.ready)
        except ReadyTimeout as exc:
            raise StepFailed(f"ready failed: {exc.message.splitlines()[0]}", exc.message) from None
        self.rebuild()  # health changes already rebuilt it; this makes the table certain
        return "ok", f"{len(instances)} instance(s) ready in {time.monotonic() - started:.1f}s"

    async def _step_smoke(self, run: _Run) -> tuple[Any, str]:
        assert run.release is not None
        # The preview listener now shows the candidate; the public one still the live colour.
        self.router.swap(self.router.table.with_preview(run.target))
        hook = self.config.hooks.smoke
        if hook is None:
            return "skipped", "no smoke hook configured"
        port = self.router.preview_port
        if port is None:
            return "skipped", "no preview listener: cannot smoke-test"
        host = self.config.listen.preview.host
        base_url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        argv = hook.render(
            python=run.release.python,
            release=run.release.id,
            release_dir=run.release.dir,
            colour=run.target,
            base_url=base_url,
        )
        return "ok", await self._hook(run, "smoke", argv)

    async def _step_approve(self, run: _Run) -> tuple[Any, str]:
        started = time.monotonic()
        await run.approved.wait()
        return "ok", f"promoted after {time.monotonic() - started:.1f}s"

    async def _step_switch(self, run: _Run) -> tuple[Any, str]:
        assert run.release is not None
        if run.previous is not None:
            self.sample()
            ring = self._ring[run.previous]
            now_stats = ring[-1][1]
            run.baseline = window_baseline(
                list(ring)[:-1],
                now_stats,
                time.monotonic(),
                max(self.config.timeouts.analysis_window, self.sample_interval),
            )
        run.candidate_at_switch = self.router.metrics.snapshot(run.target)
        run.switch_at = time.monotonic()
        self.router.swap(self.router.table.with_live(run.target).with_preview(None))
        self.state.set_live(run.target, run.release.id)
        run.switched = True
        was = f"{run.previous} → " if run.previous else ""
        return "ok", f"live: {was}{run.target} ({run.release.id})"

    async def _step_drain(self, run: _Run) -> tuple[Any, str]:
        if run.previous is None:
            return "skipped", "nothing was live before"
        started = time.monotonic()
        drain = asyncio.create_task(self.router.drain(run.previous, self.config.timeouts.drain))
        rollback = asyncio.create_task(run.rollback_requested.wait())
        try:
            await asyncio.wait({drain, rollback}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (drain, rollback):
                t.cancel()
            await asyncio.gather(drain, rollback, return_exceptions=True)
        if run.rollback_requested.is_set():
            await self._switch_back(run, "rolled back by the operator during drain")
            run.rollback_reason = "rolled back by the operator during drain"
            return "ok", "interrupted by a rollback"
        left = self.router.metrics.in_flight(run.previous)
        return "ok", (
            f"{run.previous} drained in {time.monotonic() - started:.2f}s"
            + (f" ({left} still in flight)" if left else "")
        )

    async def _step_analyse(self, run: _Run) -> tuple[Any, str]:
        window = self.config.timeouts.analysis_window
        if run.previous is None:
            return "skipped", "first deploy: nothing to compare with or roll back to"
        if window <= 0:
            return "skipped", "analysis_window is 0"
        remaining = run.switch_at + window - time.monotonic()
        if remaining > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(run.rollback_requested.wait(), remaining)
        if run.rollback_requested.is_set():
            await self._switch_back(run, "rolled back by the operator during analysis")
            run.rollback_reason = "rolled back by the operator during analysis"
            return "ok", "interrupted by a rollback"
        assert run.candidate_at_switch is not None
        candidate = self.router.metrics.snapshot(run.target) - run.candidate_at_switch
        baseline = run.baseline or ColourStats(colour=run.previous)
        verdict: Verdict = analyse(
            baseline=to_stats(baseline),
            candidate=to_stats(candidate),
            thresholds=AnalysisThresholds.from_config(self.config.analysis),
        )
        figures = ", ".join(f"{k}={_fmt(v)}" for k, v in verdict.figures.items())
        if not verdict.ok:
            raise StepFailed(f"analysis breached: {verdict.reason}", f"{figures}\n{verdict.reason}")
        return "ok", f"{figures}\n{verdict.reason}"

    async def _step_retire(self, run: _Run) -> tuple[Any, str]:
        if run.previous is None:
            return "skipped", "nothing was live before"
        delay = self.config.timeouts.scale_down_delay
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
            await self._switch_back(run, run.rollback_reason)
            return "ok", "interrupted by a rollback"
        await self._stop_colour(run.previous)
        why = "a new deploy started" if run.retire_now.is_set() else f"after {delay:g}s"
        return "ok", f"{run.previous} stopped ({why})"

    def _warm(self, colour: Colour, release_id: str) -> bool:
        instances = self.supervisor.instances(colour)
        return bool(instances) and all(i.release.id == release_id and i.healthy for i in instances)


def _fmt(value: float | int | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
