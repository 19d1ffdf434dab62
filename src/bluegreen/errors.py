"""Errors raised by bluegreen.

Every error is a :class:`BluegreenError` with a stable machine-readable ``code``
(for JSON answers of the admin API) and the process ``exit_code`` the CLI uses.
Messages are written for the operator: they name the thing that is wrong and,
where possible, how to fix it.
"""

from __future__ import annotations

from collections.abc import Sequence


class BluegreenError(Exception):
    """Base class: ``code`` is stable for APIs, ``exit_code`` is used by the CLI."""

    code: str = "error"
    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(BluegreenError):
    """``bluegreen.toml`` (or the environment it is combined with) is invalid."""

    code = "config_invalid"
    exit_code = 2


class StateError(BluegreenError):
    """The state database was used in a way it does not allow."""

    code = "state_error"
    exit_code = 1


class DeployInProgress(BluegreenError):
    """Another deploy is already running; only one may run at a time."""

    code = "deploy_in_progress"
    exit_code = 3

    def __init__(self, deploy_id: int, release_id: str) -> None:
        super().__init__(
            f"deploy #{deploy_id} of release {release_id} is still running; "
            "wait for it to finish or abort it first"
        )
        self.deploy_id = deploy_id
        self.release_id = release_id


class ReleaseError(BluegreenError):
    """A release could not be materialised (bad ref, git failure, pip failure...)."""

    code = "release_failed"
    exit_code = 1


class ReadyTimeout(BluegreenError):
    """Instances did not become ready in time (or kept crashing before they did)."""

    code = "ready_timeout"
    exit_code = 1

    def __init__(self, message: str, instance_ids: Sequence[str]) -> None:
        super().__init__(message)
        self.instance_ids = tuple(instance_ids)


class StepFailed(BluegreenError):
    """A deploy step failed; ``output`` is what it printed."""

    code = "step_failed"

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output or message
