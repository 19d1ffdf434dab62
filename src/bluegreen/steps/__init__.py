"""The deploy's steps: plain functions over a :class:`DeployContext`, registered in
:data:`RUNNERS` next to :func:`plan` (see :mod:`bluegreen.steps.plan`)."""

from __future__ import annotations

from bluegreen.steps.context import (
    ControlPlane,
    DataPlane,
    DeployContext,
    DeployRequest,
    Outcome,
    Run,
    Step,
    SupervisorLike,
)
from bluegreen.steps.plan import (
    RUNNERS,
    OnFailure,
    StepFn,
    failure_policy,
    final_status,
    other_colour,
    plan,
    target_colour,
)

__all__ = [
    "RUNNERS",
    "ControlPlane",
    "DataPlane",
    "DeployContext",
    "DeployRequest",
    "OnFailure",
    "Outcome",
    "Run",
    "Step",
    "StepFn",
    "SupervisorLike",
    "failure_policy",
    "final_status",
    "other_colour",
    "plan",
    "target_colour",
]
