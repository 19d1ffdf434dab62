"""Errors raised by bluegreen, as data.

Every error is a :class:`BluegreenError` with a stable machine-readable ``code``, the HTTP
``status`` the admin API answers it with, and the process ``exit_code`` the CLI uses. The
admin API renders every one of them the same way (:meth:`BluegreenError.body`):
``{"error": {"code": ..., "message": ...}}``, the shape the clinic's API uses too.
Messages are written for the operator: they name the thing that is wrong and, where
possible, how to fix it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar


class BluegreenError(Exception):
    """Base class: ``code`` is stable for APIs, ``status`` is the HTTP answer, ``exit_code``
    is used by the CLI."""

    code: ClassVar[str] = "error"
    status: ClassVar[int] = 500
    exit_code: ClassVar[int] = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def body(self) -> dict[str, Any]:
        """The one JSON error shape of the admin API."""
        return error_body(self.code, self.message)


def error_body(code: str, message: str) -> dict[str, Any]:
    """``{"error": {"code": code, "message": message}}``."""
    return {"error": {"code": code, "message": message}}


class BadRequest(BluegreenError):
    """A request to the admin API is malformed (names what is wrong)."""

    code = "bad_request"
    status = 400
    exit_code = 2


class Unauthorised(BluegreenError):
    """Missing or wrong admin token."""

    code = "unauthorised"
    status = 401
    exit_code = 2


class Forbidden(BluegreenError):
    """Authenticated, but the request is refused (a bad CSRF token)."""

    code = "forbidden"
    status = 403


class NotFound(BluegreenError):
    """No such deploy, instance or page."""

    code = "not_found"
    status = 404


class Conflict(BluegreenError):
    """The operation does not apply in the current state."""

    code = "conflict"
    status = 409


class NothingToDo(Conflict):
    """The operation does not apply now (nothing awaits approval, nothing to roll back...)."""

    code = "conflict"


class RollbackRefused(Conflict):
    """The schema is no longer compatible with the release to roll back to."""

    code = "rollback_refused"


class ConfigError(BluegreenError):
    """``bluegreen.toml`` (or the environment it is combined with) is invalid."""

    code = "config_invalid"
    status = 400
    exit_code = 2


class StateError(BluegreenError):
    """The state database was used in a way it does not allow."""

    code = "state_error"
    exit_code = 1


class DeployInProgress(Conflict):
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
    status = 422
    exit_code = 1


class ReadyTimeout(BluegreenError):
    """Instances did not become ready in time (or kept crashing before they did)."""

    code = "ready_timeout"
    status = 504
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


class DatabaseError(BluegreenError):
    """The shared database could not be obtained."""

    code = "database_failed"
    status = 503
