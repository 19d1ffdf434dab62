"""The deploy plan as data: which steps a deploy goes through, the function that runs each
(:data:`RUNNERS`), and what a failure of each means (:func:`failure_policy`). Pure."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType

from bluegreen.config import Colour
from bluegreen.state import DeployStatus
from bluegreen.steps import aftercare, migration, phases, rollout, shadow
from bluegreen.steps.context import DeployContext, Outcome, Step

StepFn = Callable[[DeployContext], Awaitable[Outcome]]


class OnFailure(enum.Enum):
    """What a failing step means for the deploy."""

    ABORT = "abort"  # before the switch: stop the candidate, live colour untouched
    ROLL_BACK = "roll_back"  # after the switch: old colour live again at once
    CONTINUE = "continue"  # the candidate is live and fine; note the failure and go on


RUNNERS: Mapping[Step, StepFn] = MappingProxyType(
    {
        Step.PREPARE: rollout.prepare,
        Step.LINT: migration.lint,
        Step.REHEARSE: migration.rehearse,
        Step.MIGRATE: migration.migrate,
        Step.VERIFY: migration.verify,
        Step.START: rollout.start,
        Step.READY: rollout.ready,
        Step.SMOKE: rollout.smoke,
        Step.SHADOW: shadow.shadow,
        Step.APPROVE: rollout.approve,
        Step.PHASES: phases.phases,
        Step.SWITCH: rollout.switch,
        Step.DRAIN: aftercare.drain,
        Step.ANALYSE: aftercare.analyse,
        Step.RETIRE: aftercare.retire,
    }
)
"""The function that runs each step."""

_POLICY: Mapping[Step, OnFailure] = MappingProxyType(
    {
        Step.PREPARE: OnFailure.ABORT,
        Step.LINT: OnFailure.ABORT,
        Step.REHEARSE: OnFailure.ABORT,
        Step.MIGRATE: OnFailure.ABORT,
        Step.VERIFY: OnFailure.ABORT,  # after undoing the migration it just applied
        Step.START: OnFailure.ABORT,
        Step.READY: OnFailure.ABORT,
        Step.SMOKE: OnFailure.ABORT,
        Step.SHADOW: OnFailure.ABORT,
        Step.APPROVE: OnFailure.ABORT,
        Step.PHASES: OnFailure.ROLL_BACK,  # users were on the candidate: all back at once
        Step.SWITCH: OnFailure.ABORT,  # routes change atomically: if it raised, nothing switched
        Step.DRAIN: OnFailure.CONTINUE,
        Step.ANALYSE: OnFailure.ROLL_BACK,
        Step.RETIRE: OnFailure.CONTINUE,
    }
)


def plan(*, manual: bool, rollback: bool = False, phased: bool = False) -> tuple[Step, ...]:
    """The steps a deploy goes through, in order.

    A rollback re-runs the last good release: it is neither prepared nor migrated (its
    code must work with the newer schema), but started cold it is checked like a deploy:
    ready, smoke through the preview listener, and the analysis after the switch.
    Steps that have nothing to do (no hook, nothing live before) are still listed and
    recorded as ``skipped``. A ``phased`` switch (``[switch] steps`` other than ``[100]``)
    adds the ``phases`` step before the switch; a rollback always switches atomically.
    """
    if rollback:
        return (
            Step.START,
            Step.READY,
            Step.SMOKE,
            Step.SWITCH,
            Step.DRAIN,
            Step.ANALYSE,
            Step.RETIRE,
        )
    steps = [Step.PREPARE, Step.LINT, Step.REHEARSE, Step.MIGRATE, Step.VERIFY]
    steps += [Step.START, Step.READY, Step.SMOKE, Step.SHADOW]
    if manual:
        steps.append(Step.APPROVE)
    if phased:
        steps.append(Step.PHASES)
    steps += [Step.SWITCH, Step.DRAIN, Step.ANALYSE, Step.RETIRE]
    return tuple(steps)


def failure_policy(step: Step) -> OnFailure:
    """What to do when ``step`` fails."""
    return _POLICY[step]


def other_colour(colour: Colour) -> Colour:
    """The colour that is not ``colour``."""
    return "green" if colour == "blue" else "blue"


def target_colour(live: Colour | None) -> Colour:
    """Where the next deploy goes: blue first, then always the colour that is not live."""
    return "blue" if live is None else other_colour(live)


def final_status(
    failed: Step | None, policy: OnFailure | None, *, cancelled: bool, interrupted: bool = False
) -> DeployStatus:
    """The deploy's final status given the step that failed (if any) and its policy."""
    if failed is None or policy is OnFailure.CONTINUE:
        return "succeeded"
    if policy is OnFailure.ROLL_BACK:
        return "rolled_back"
    if interrupted:
        return "interrupted"
    return "aborted" if cancelled else "failed"
