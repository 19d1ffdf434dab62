"""The clinic's identity: name, address, phone and emergency notice, configured once in the
settings and shown in every page's footer, on error pages, in emails, and (read-only, public)
at ``GET /api/v1/clinic`` for bluegreen's maintenance and pause pages. Also the favicon."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, ConfigDict

from clinic.core.config import Settings

FAVICON = Path(__file__).parent / "static" / "favicon.ico"

router = APIRouter()


class ClinicPublic(BaseModel):
    """Who runs this clinic and how to reach it (public facts, no secrets)."""

    model_config = ConfigDict(frozen=True)

    name: str
    address: str
    phone: str
    emergency_notice: str

    @classmethod
    def of(cls, settings: Settings) -> ClinicPublic:
        return cls(
            name=settings.clinic_name,
            address=settings.clinic_address,
            phone=settings.clinic_phone,
            emergency_notice=settings.clinic_emergency_notice,
        )


def identity_of(request: Request) -> ClinicPublic:
    """The identity of the app serving ``request``."""
    settings: Settings = request.app.state.clinic.settings
    return ClinicPublic.of(settings)


@router.get("/api/v1/clinic", tags=["clinic"])
async def clinic(request: Request) -> ClinicPublic:
    """The clinic's name, address, phone and emergency notice (no login needed)."""
    return identity_of(request)


@router.get("/favicon.ico", include_in_schema=False)
async def favicon() -> Response:
    # Browsers ask for it on every site; cached for a day.
    return FileResponse(
        FAVICON, media_type="image/x-icon", headers={"Cache-Control": "public, max-age=86400"}
    )
