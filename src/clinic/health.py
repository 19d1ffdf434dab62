"""The contract with the deployer: liveness, readiness and version, without authentication."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from clinic.core.schema import current_revision, head_revision, schema_is_recent_enough
from clinic.web.deps import app_state

router = APIRouter(tags=["health"])


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
