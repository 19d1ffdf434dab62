"""The contract with the deployer: liveness, readiness and version, without authentication."""

from __future__ import annotations

import copy
import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from clinic.core.schema import current_revision, head_revision, schema_is_recent_enough
from clinic.web.deps import app_state

router = APIRouter(tags=["health"])

HEALTH_PATHS = frozenset({"/healthz/live", "/healthz/ready"})


class QuietHealthChecks(logging.Filter):
    """Drops uvicorn's access-log lines for answered health checks: Envoy and the supervisor
    poll every instance every second, which buried everything else in the logs. A check
    that fails (4xx/5xx) is still logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        # uvicorn.access: (client, method, full path, HTTP version, status code)
        if not isinstance(args, tuple) or len(args) != 5:
            return True
        path, status = str(args[2]).partition("?")[0], args[4]
        return not (path in HEALTH_PATHS and isinstance(status, int) and status < 400)


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's own logging configuration with :class:`QuietHealthChecks` on its access log
    (``uvicorn.run(..., log_config=uvicorn_log_config())``)."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["quiet_health_checks"] = {"()": QuietHealthChecks}
    config["loggers"]["uvicorn.access"]["filters"] = ["quiet_health_checks"]
    return config


@router.get("/healthz/live")
async def live() -> dict[str, str]:
    """The process is up and serving HTTP."""
    return {"status": "ok"}


@router.get("/healthz/ready")
async def ready(request: Request) -> JSONResponse:
    """The database is reachable and its schema is at or past the revision this code needs."""
    state = app_state(request)
    needed = head_revision()
    try:
        async with state.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            current = await current_revision(conn)
    except Exception as exc:  # any failure to reach the database means not ready
        return JSONResponse(
            {"status": "unavailable", "reason": f"database unreachable: {type(exc).__name__}"},
            status_code=503,
        )
    if not schema_is_recent_enough(current):
        return JSONResponse(
            {
                "status": "unavailable",
                "reason": "schema too old",
                "schema": current,
                "needs": needed,
            },
            status_code=503,
        )
    return JSONResponse({"status": "ok", "schema": current, "needs": needed})


@router.get("/version")
async def version(request: Request) -> dict[str, str | None]:
    settings = app_state(request).settings
    return {"release": settings.release_id, "color": settings.color, "schema": head_revision()}
