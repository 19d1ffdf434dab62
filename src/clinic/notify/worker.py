"""The job worker: a procrastinate App for the clinic's settings, and a lifecycle object
that starts it and drains it on stop. Used in-process (``runtime.lifespan``) and by
``clinic worker``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import procrastinate
from procrastinate.jobs import Job
from procrastinate.retry import BaseRetryStrategy, RetryDecision
from procrastinate.worker import Worker
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clinic.core import jobs
from clinic.core.config import Settings
from clinic.notify import tasks
from clinic.notify.tasks import JobEnv

log = logging.getLogger(__name__)

MAX_BACKOFF = 3600.0


def conninfo(url: str) -> str:
    """The clinic's ``postgresql+asyncpg://`` URL as a libpq URI for psycopg (a Unix socket
    stays ``?host=/dir``; asyncpg's ``ssl=`` becomes libpq's ``sslmode=``)."""
    parts = urlsplit(url)
    query = [("sslmode", v) if k == "ssl" else (k, v) for k, v in parse_qsl(parts.query)]
    return urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(query), ""))


def tick_cron(tick: timedelta) -> str:
    """A cron line for the period (procrastinate's 6th column is seconds)."""
    seconds = int(tick.total_seconds())
    if seconds < 1 or tick.total_seconds() != seconds:
        raise ValueError("CLINIC_JOBS_TICK must be a whole number of seconds, at least 1")
    if seconds < 60:
        if 60 % seconds:
            raise ValueError("CLINIC_JOBS_TICK under a minute must divide 60 seconds")
        return f"* * * * * */{seconds}"
    if seconds % 60:
        raise ValueError("CLINIC_JOBS_TICK over a minute must be whole minutes")
    minutes = seconds // 60
    if minutes == 60:
        return "0 * * * *"
    if 60 % minutes:
        raise ValueError("CLINIC_JOBS_TICK in minutes must divide an hour")
    return f"*/{minutes} * * * *"


class Backoff(BaseRetryStrategy):
    """At most ``max_runs`` runs; the n-th retry waits ``base * 2**(n-1)`` seconds."""

    def __init__(self, *, max_runs: int, base: float) -> None:
        self.max_runs = max_runs
        self.base = base

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
        if job.attempts + 1 >= self.max_runs:
            return None
        return RetryDecision(retry_in={"seconds": min(MAX_BACKOFF, self.base * 2**job.attempts)})


def build_app(settings: Settings) -> procrastinate.App:
    """A procrastinate App on the clinic's database with the clinic's tasks."""
    assert settings.database_url is not None
    connector = procrastinate.PsycopgConnector(
        conninfo=conninfo(settings.database_url),
        min_size=1,
        max_size=settings.worker_concurrency + 4,
        kwargs={"application_name": "clinic-worker"},
    )
    app = procrastinate.App(connector=connector, periodic_defaults={"max_delay": 600})
    retry = Backoff(
        max_runs=settings.job_max_attempts, base=settings.job_retry_base.total_seconds()
    )
    app.task(name=jobs.SEND_EMAIL, pass_context=True, retry=retry)(tasks.send_email)
    tick = app.task(name=jobs.TICK, pass_context=True)(tasks.tick)
    app.periodic(cron=tick_cron(settings.jobs_tick), periodic_id="sweep")(tick)
    purge = app.task(name=jobs.PURGE, pass_context=True)(tasks.purge)
    app.periodic(cron="17 * * * *", periodic_id="hourly")(purge)
    return app


def worker_name(settings: Settings) -> str:
    return f"{settings.color or 'clinic'}-{socket.gethostname()}-{os.getpid()}"


class JobWorker:
    """One worker for this process: ``await start()``, later ``await stop()``.

    ``stop`` drains: no new job is fetched, running jobs get ``worker_drain_timeout`` to
    finish, then are aborted and handed back to the queue (their retry is immediate), so a
    retiring colour loses no work. A worker killed outright stops its heartbeat; another
    worker's tick hands its jobs back after ``worker_stalled_timeout``.
    """

    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.settings = settings
        self.env = JobEnv(settings=settings, sessions=sessions)
        self.app = build_app(settings)
        self._worker: Worker | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.app.open_async()
        s = self.settings
        options: dict[str, Any] = {
            "name": worker_name(s),
            "concurrency": s.worker_concurrency,
            "fetch_job_polling_interval": s.worker_poll_interval.total_seconds(),
            "abort_job_polling_interval": s.worker_poll_interval.total_seconds(),
            "shutdown_graceful_timeout": s.worker_drain_timeout.total_seconds(),
            "additional_context": {"clinic": self.env},
            "install_signal_handlers": False,
            "update_heartbeat_interval": s.worker_heartbeat_interval.total_seconds(),
            "stalled_worker_timeout": s.worker_stalled_timeout.total_seconds(),
        }
        self._worker = Worker(app=self.app, **options)
        self._task = asyncio.create_task(self._worker.run(), name="clinic job worker")  # type: ignore[no-untyped-call]
        # Let run() begin: it clears any stop request it finds, so a stop() that came
        # before its first step would be lost.
        await asyncio.sleep(0)
        log.info("job worker %s started", options["name"])

    async def wait(self) -> None:
        """Until the worker stops (``clinic worker`` runs this until a signal)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def stop(self) -> None:
        try:
            if self._worker is not None and self._task is not None:
                self._worker.stop()  # type: ignore[no-untyped-call]
                limit = self.settings.worker_drain_timeout.total_seconds() + 5
                try:
                    await asyncio.wait_for(asyncio.shield(self._task), timeout=limit)
                except TimeoutError:
                    log.error("job worker did not drain in %.0f s; cancelling", limit)
                    self._task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await self._task
                except Exception:
                    log.exception("job worker failed")
        finally:
            self._worker = self._task = None
            await self.app.close_async()
