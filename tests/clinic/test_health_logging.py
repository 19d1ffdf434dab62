"""Answered health checks are not written to the access log; everything else is."""

from __future__ import annotations

import asyncio
import logging
import socket

import httpx
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from clinic.health import router, uvicorn_log_config


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.paths: list[tuple[str, int]] = []

    def emit(self, record: logging.LogRecord) -> None:
        assert isinstance(record.args, tuple)
        self.paths.append((str(record.args[2]), int(record.args[4])))  # type: ignore[call-overload]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_answered_health_checks_are_not_logged_failed_ones_and_pages_are() -> None:
    app = FastAPI()
    ready = {"ok": False}

    @app.get("/healthz/ready")
    async def fake_ready() -> JSONResponse:  # the real one needs a database
        return JSONResponse({}, status_code=200 if ready["ok"] else 503)

    @app.get("/page")
    async def page() -> dict[str, str]:
        return {}

    app.include_router(router)  # the real /healthz/live (its ready path is shadowed above)

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=uvicorn_log_config())
    records = Records()
    access = logging.getLogger("uvicorn.access")
    access.addHandler(records)  # after the Config applied the log config, beside its handler
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        for _ in range(3000):  # uvicorn.Server offers no event to wait for
            if server.started:
                break
            await asyncio.sleep(0.01)
        assert server.started
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for path in ("/healthz/live", "/healthz/live?probe=1", "/healthz/ready", "/page"):
                await client.get(path)
            ready["ok"] = True
            await client.get("/healthz/ready")
    finally:
        server.should_exit = True
        await serving
        access.removeHandler(records)
    assert records.paths == [("/healthz/ready", 503), ("/page", 200)]
