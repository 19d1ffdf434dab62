"""The deploy state machine: runs the steps of :func:`bluegreen.steps.plan` one after the
other, each a plain function over a :class:`~bluegreen.steps.DeployContext`.

Promises:

* every step is recorded in the state store *before* it runs and finished with its output;
* before the switch, a failure stops the candidate colour and leaves the live colour
  serving untouched (deploy ``failed``; ``aborted`` when cancelled by the operator);
* after the switch, a breached analysis (or an operator rollback while the old colour
  is still warm) swaps the old colour back at once (deploy ``rolled_back``);
* exactly one colour is live at any time once something was deployed; the state store
  and the data plane always agree on which.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging

from bluegreen import recovery
from bluegreen.dataplane.table import Mode
from bluegreen.errors import (
    DeployInProgress,
    NothingToDo,
    ReadyTimeout,
    RollbackRefused,
    StepFailed,
)
from bluegreen.migrations import Plan, rollback_blockers
from bluegreen.release import Release
from bluegreen.state import Deploy, tail
from bluegreen.steps import (
    RUNNERS,
    ControlPlane,
    DeployContext,
    DeployRequest,
    OnFailure,
    Run,
    Step,
    failure_policy,
    final_status,
    other_colour,
    plan,
    target_colour,
)
from bluegreen.steps.aftercare import switch_back

logger = logging.getLogger(__name__)

__all__ = ["Controller", "DeployRequest"]


@dataclasses.dataclass(slots=True)
class _Ending:
    """How a deploy's steps ended."""

    failed: Step | None = None
    policy: OnFailure | None = None
    error: str | None = None
    cancelled: bool = False


class Controller:
    """Runs deploys and rollbacks over a :class:`~bluegreen.steps.ControlPlane`.

    Call :meth:`start` once (it recovers from an interrupted previous run and serves the
    live colour), then :meth:`start_deploy`, :meth:`promote`, :meth:`rollback`,
    :meth:`set_mode`; :meth:`close` cancels what runs.
    """

    def __init__(self, plane: ControlPlane, *, sample_interval: float = 1.0) -> None:
        self.plane = plane
        self.config = plane.config
        self.state = plane.state
        self.sample_interval = sample_interval
        self._run: Run | None = None
        self._lock = asyncio.Lock()  # serialises starting deploys/rollbacks
        self._sampler: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> Deploy | None:
        """Take over what the last daemon left, then serve what the state store says is live.

        Adopts the live colour's instances that still serve, reaps every other process of
        this state dir, cleans up an interrupted deploy (recorded ``interrupted``) and starts
        only the live instances that are missing. Returns the interrupted deploy, if any.
        """
        plane = self.plane
        cur = self.state.current()
        live_colour = cur.live_colour
        release = plane.release_from_state(cur.live_release) if cur.live_release else None
        if cur.live_release is not None and release is None:
            logger.error("live release %s is gone from disk; nothing served", cur.live_release)
        if release is not None:
            await plane.environment.ensure(release)
        adopted = await recovery.adopt_instances(plane, live_colour if release else None)
        await recovery.reap_strays(plane, adopted)
        interrupted = await self._recover(self.state.running_deploy())
        for colour in ("blue", "green"):
            if colour != live_colour and cur.colours.get(colour) is not None:
                self.state.set_colour_release(colour, None)
        if self._sampler is None:
            self._sampler = asyncio.create_task(self._sample_forever(), name="bluegreen-sampler")
        if live_colour is None or release is None:
            return interrupted
        missing = self.config.replicas.of(live_colour) - len(adopted)
        started = await plane.add_instances(live_colour, release, max(0, missing))
        # A phased switch the last daemon left half way: everyone on the live colour.
        await plane.route(lambda t: t.with_live(live_colour).with_preview(None).with_weights(None))
        logger.info(
            "serving %s: %d instance(s) adopted, %d started",
            live_colour,
            len(adopted),
            len(started),
        )
        try:
            await plane.supervisor.wait_ready([*adopted, *started], self.config.timeouts.ready)
        except ReadyTimeout as exc:
            # Keep them supervised: they are all we have; the supervisor keeps trying.
            logger.error("live colour %s not ready after restart: %s", live_colour, exc)
        return interrupted

    async def _recover(self, deploy: Deploy | None) -> Deploy | None:
        """Record a deploy the daemon's death interrupted, after undoing what it left."""
        if deploy is None:
            return None
        notes = await recovery.recover_interrupted(self.plane, deploy)
        step = deploy.running_step()
        reason = f"interrupted: the daemon stopped during {step.name if step else 'the deploy'}"
        if notes:
            reason += " (" + "; ".join(notes) + ")"
        return self.state.abort_interrupted(reason, status="interrupted")

    async def close(self) -> None:
        """Cancel the running deploy (recorded ``interrupted``: no operator cancelled it;
        its candidate stopped, its migration undone) and background work."""
        run = self._run
        if run is not None and run.task is not None:
            run.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await run.task
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._sampler
            self._sampler = None
        await self.plane.close()

    @property
    def running(self) -> Run | None:
        """The running deploy's in-memory record, if any."""
        return self._run

    async def wait_idle(self) -> None:
        """Return once no deploy runs."""
        run = self._run
        if run is not None and run.task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.shield(run.task)

    def release_from_state(self, release_id: str) -> Release | None:
        """The recorded release ``release_id`` if its directory still exists."""
        return self.plane.release_from_state(release_id)

    # ------------------------------------------------------------------ operations

    async def set_mode(self, mode: Mode) -> None:
        """``serving``, ``paused`` (hold requests) or ``maintenance`` (maintenance page)."""
        await self.plane.route(lambda t: t.with_mode(mode))

    async def hot_restart_dataplane(self) -> int | None:
        """Envoy's hot restart: a new epoch on a freshly written bootstrap takes over the
        listening sockets, the old one drains. Routes are applied again; the new pid."""
        async with self.plane.route_lock:
            await self.plane.dataplane.hot_restart()
        await self.plane.route()
        return self.plane.dataplane.pid

    async def start_deploy(self, request: DeployRequest) -> int:
        """Begin a deploy in the background; return its id.

        A deploy that only waits to retire its old colour is finished first (old colour
        stopped now); any other running deploy raises :class:`DeployInProgress`.
        """
        async with self._lock:
            await self._finish_retiring()
            live = self.state.current().live_colour
            deploy_id = self.state.begin_deploy(request.source, request.source, request.manual)
            run = Run(
                deploy_id=deploy_id, target=target_colour(live), previous=live, request=request
            )
            self._launch(run)
            return deploy_id

    async def promote(self) -> int:
        """Approve the manual deploy waiting in its approve step, or skip the remaining
        steps of a phased switch (the new colour gets everyone now)."""
        run = self._run
        if run is not None and run.step is Step.PHASES:
            run.skip_phases.set()
            return run.deploy_id
        if run is None or run.step is not Step.APPROVE:
            raise NothingToDo("no deploy is waiting for approval or in a phased switch")
        run.approved.set()
        return run.deploy_id

    async def rollback(self) -> tuple[int, str]:
        """Back to the previous release; return ``(deploy id, what happened)``.

        * a deploy before its switch is cancelled (the live colour never changed);
        * during a phased switch, everyone is back on the live colour at once;
        * after its switch, while the old colour is warm, the old colour is live again at
          once (this returns after the swap);
        * otherwise the previous release is started on the other colour, then switched to
          (in the background: this returns the rollback deploy's id).
        """
        run = self._run
        if run is not None:
            return await self._roll_back_running(run)
        async with self._lock:
            cur = self.state.current()
            if cur.previous_release is None or cur.live_colour is None:
                bad = self.state.last_rolled_back()
                raise NothingToDo(
                    "nothing to roll back to: no release other than the live one "
                    f"({cur.live_release or '-'}) passed its checks"
                    + (f" ({bad} was rolled back and is never a rollback target)" if bad else "")
                )
            release = self.plane.release_from_state(cur.previous_release)
            if release is None:
                raise NothingToDo(f"previous release {cur.previous_release} is gone from disk")
            await self.check_rollback(release.id)
            deploy_id = self.state.begin_deploy(release.id, "rollback")
            run = Run(
                deploy_id=deploy_id,
                target=other_colour(cur.live_colour),
                previous=cur.live_colour,
                request=None,
                release=release,
            )
            self._launch(run)
            return deploy_id, (
                f"rollback #{deploy_id} to {release.id} (the last good release) started: "
                f"it starts cold, so it goes through ready, smoke and the analysis like a deploy"
            )

    async def _roll_back_running(self, run: Run) -> tuple[int, str]:
        if not run.switched and run.step is not Step.PHASES:
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
            phased = run.step is Step.PHASES
            run.rollback_requested.set()
            await run.rolled_back.wait()
            what = (
                f"everyone is on {run.previous} again"
                if phased
                else f"{run.previous} is live again"
            )
            return run.deploy_id, f"deploy #{run.deploy_id} rolled back: {what}"
        raise DeployInProgress(run.deploy_id, run.release.id if run.release else "?")

    async def check_rollback(self, release_id: str, *, plan: Plan | None = None) -> None:
        """Refuse a rollback to ``release_id`` when a contract migration applied since its
        schema head removed something it uses (nothing to check without ``[migrations]``).
        ``plan``: the live release's migration plan when already known."""
        cur = self.state.current()
        if self.config.migrations is None or cur.live_release is None:
            return
        target = self.state.release(release_id)
        live = self.plane.release_from_state(cur.live_release)
        if target is None or live is None:
            return
        plan_ = plan or await self.plane.migration_plan(live, cur.live_colour or "blue")
        blockers = rollback_blockers(plan_, target_head=target.migration_head)
        if blockers:
            raise RollbackRefused(
                f"rollback to {release_id} refused: the schema is no longer compatible with it ("
                + "; ".join(blockers)
                + "). Fix forward: deploy a new release instead."
            )

    # ------------------------------------------------------------------ running a deploy

    def _launch(self, run: Run) -> None:
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

    async def _execute(self, run: Run) -> None:
        ctx = DeployContext(self.plane, run)
        ending = await self._run_steps(ctx)
        interrupted = ending.cancelled and not run.cancelled_by_operator
        status = final_status(
            ending.failed, ending.policy, cancelled=ending.cancelled, interrupted=interrupted
        )
        try:
            if ending.policy is OnFailure.ABORT and ending.failed is not None:
                await self._abort(ctx)
                if interrupted:
                    deploy = self.state.deploy(run.deploy_id)
                    notes = await recovery.recover_interrupted(self.plane, deploy) if deploy else []
                    if notes:
                        ending.error = f"{ending.error} ({'; '.join(notes)})"
            elif interrupted and run.switched:
                # The new colour is live and stays so; the next daemon retires the old one.
                status = "interrupted"
            elif ending.policy is OnFailure.ROLL_BACK and not run.rolled_back.is_set():
                await switch_back(ctx, ending.error or "rolled back")
        finally:
            self.state.finish_deploy(
                run.deploy_id, status, ending.error if status != "succeeded" else None
            )
            run.rolled_back.set()
            if self._run is run:
                self._run = None
        if ending.cancelled and not run.cancelled_by_operator:
            raise asyncio.CancelledError

    async def _run_steps(self, ctx: DeployContext) -> _Ending:
        run = ctx.run
        steps = plan(
            manual=run.request.manual if run.request else False,
            rollback=run.request is None,
            phased=self.config.switch.phased,
        )
        ending = _Ending()
        try:
            for step in steps:
                run.step = step
                self.state.step_started(run.deploy_id, step.value)
                try:
                    outcome, output = await RUNNERS[step](ctx)
                except StepFailed as exc:
                    self.state.step_finished(run.deploy_id, step.value, "failed", tail(exc.output))
                    ending = _Ending(step, failure_policy(step), exc.message)
                    if ending.policy is OnFailure.CONTINUE:
                        continue
                    return ending
                self.state.step_finished(run.deploy_id, step.value, outcome, tail(output))
                if run.rollback_reason:  # an operator rollback during drain/analyse/retire
                    return _Ending(step, OnFailure.ROLL_BACK, run.rollback_reason)
        except asyncio.CancelledError:
            why = "cancelled by the operator" if run.cancelled_by_operator else "interrupted"
            return _Ending(run.step, self._policy(run), f"{why} during {run.step}", cancelled=True)
        except Exception as exc:  # a bug or an unexpected I/O error: treat as step failure
            logger.exception("deploy #%s: step %s crashed", run.deploy_id, run.step)
            error = f"{run.step} crashed: {type(exc).__name__}: {exc}"
            return _Ending(run.step, self._policy(run), error)
        return ending

    @staticmethod
    def _policy(run: Run) -> OnFailure:
        return failure_policy(run.step) if run.step else OnFailure.ABORT

    async def _abort(self, ctx: DeployContext) -> None:
        """Before the switch: candidate stopped, preview back to the live colour."""

        async def stop() -> None:
            await self.plane.route(lambda t: t.with_preview(None).with_weights(None))
            await self.plane.stop_colour(ctx.run.target)

        await asyncio.shield(stop())

    async def _sample_forever(self) -> None:
        while True:
            try:
                await self.plane.sample()
            except Exception as exc:  # the data plane restarting: try again next second
                logger.warning("cannot read the data plane's statistics: %s", exc)
            await asyncio.sleep(self.sample_interval)
