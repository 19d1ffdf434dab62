"""The long-running bluegreen process: router + admin API + supervisor + controller.

Promises:

* :meth:`Daemon.start` binds the router and the admin API, obtains the shared database
  URL (``[database] url_command``) before any instance starts, recovers from an
  interrupted run and serves what the state store says is live;
* :meth:`Daemon.stop` stops everything it started, in order: the running deploy
  (aborted), the admin API, every instance, the router, then the database
  (``stop_command``); it is safe to call twice;
* :func:`run_daemon` runs it in the foreground until SIGINT/SIGTERM or
  ``POST /api/shutdown``;
* ``<state dir>/daemon.json`` (pid and URLs) and ``daemon.pid`` exist exactly while the
  daemon runs; the admin token lives in ``<state dir>/admin-token`` (mode 0600) unless
  ``BLUEGREEN_ADMIN_TOKEN`` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

from aiohttp import web

from bluegreen.admin import AdminContext, make_app
from bluegreen.config import Config, DatabaseConfig
from bluegreen.controller import Controller, DeployRequest
from bluegreen.errors import BluegreenError
from bluegreen.hooks import run_hook
from bluegreen.release import Release
from bluegreen.router.proxy import Router
from bluegreen.state import StateStore
from bluegreen.supervisor import Supervisor

logger = logging.getLogger(__name__)

TOKEN_FILE = "admin-token"  # noqa: S105 - a file name
INFO_FILE = "daemon.json"
PID_FILE = "daemon.pid"
LOG_FILE = "daemon.log"


class DatabaseError(BluegreenError):
    """The shared database could not be obtained."""

    code = "database_failed"


def token_path(config: Config) -> Path:
    """Where the generated admin token is kept."""
    return config.state.dir / TOKEN_FILE


def read_token(config: Config) -> str | None:
    """The admin token: ``BLUEGREEN_ADMIN_TOKEN`` (via config) or the state dir's file."""
    if config.admin_token:
        return config.admin_token
    try:
        token = token_path(config).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return token or None


def ensure_token(config: Config) -> tuple[str, bool]:
    """The admin token and whether it was generated now (stored with mode 0600)."""
    existing = read_token(config)
    if existing is not None:
        return existing, False
    path = token_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    os.chmod(path, 0o600)
    return token, True


def read_info(config: Config) -> dict[str, object] | None:
    """``daemon.json`` of a daemon that runs (or ran and died), or ``None``."""
    try:
        data = json.loads((config.state.dir / INFO_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _url(host: str, port: int) -> str:
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


class Database:
    """Runs ``[database] url_command`` once and ``stop_command`` at the end."""

    def __init__(self, config: DatabaseConfig, base_env: Mapping[str, str], timeout: float) -> None:
        self.config = config
        self.base_env = dict(base_env)
        self.timeout = timeout
        self.url: str | None = None
        self._release: Release | None = None
        self._lock = asyncio.Lock()

    def _argv(self, which: str, release: Release) -> list[str]:
        template = self.config.url_command if which == "url" else self.config.stop_command
        assert template is not None
        return template.render(python=release.python, release=release.id, release_dir=release.dir)

    async def env_for(self, release: Release) -> dict[str, str]:
        """``{env: url}``, running ``url_command`` from ``release`` the first time."""
        async with self._lock:
            if self.url is None:
                lines: list[str] = []
                result = await run_hook(
                    self._argv("url", release),
                    cwd=release.dir,
                    env={**release.env(), **self.base_env},
                    timeout=self.timeout,
                    log=lines.append,
                )
                urls = [line.strip() for line in lines if "://" in line]
                if not result.ok or not urls:
                    raise DatabaseError(
                        f"database url_command failed (exit {result.exit_code}):\n{result.output}"
                    )
                self.url = urls[-1]
                self._release = release
                logger.info("database ready (%s)", self.url.split("@")[-1])
            return {self.config.env: self.url}

    async def stop(self, release: Release | None) -> None:
        """Run ``stop_command`` (from ``release`` or the one that started it), if any."""
        release = release if release is not None and release.dir.is_dir() else self._release
        if self.url is None or self.config.stop_command is None or release is None:
            return
        result = await run_hook(
            self._argv("stop", release),
            cwd=release.dir,
            # Without the URL: the provider stops the database it started itself (the
            # clinic's `db stop` is a no-op when told to use an external database).
            env={**release.env(), **self.base_env},
            timeout=self.timeout,
            log=lambda line: logger.info("[db stop] %s", line),
        )
        if not result.ok:
            logger.error("database stop_command failed: %s", result.output)
        self.url = None


class Daemon:
    """One bluegreen daemon for ``config``; ``initial`` is deployed if nothing is live."""

    def __init__(
        self,
        config: Config,
        *,
        token: str,
        initial: DeployRequest | None = None,
        python: str = sys.executable,
        poll_interval: float = 0.5,
        write_files: bool = True,
    ) -> None:
        self.config = config
        self.token = token
        self.initial = initial
        self.python = python
        self.write_files = write_files
        self.stopped = asyncio.Event()
        self._shutdown = asyncio.Event()
        self._started = False
        base_env = dict(config.app.env)
        if config.state.dir_env:
            base_env[config.state.dir_env] = str(config.state.dir)
        self.database = (
            Database(config.database, base_env, config.timeouts.hook)
            if config.database is not None
            else None
        )
        self.state = StateStore(config.state.db_path)
        self.router = Router(
            public=(config.listen.public.host, config.listen.public.port),
            preview=(config.listen.preview.host, config.listen.preview.port),
            on_backend_error=lambda b: self.controller.backend_failed(b),
        )
        self.supervisor = Supervisor(
            on_change=lambda: self.controller.rebuild(),
            log_dir=config.state.logs_dir,
            poll_interval=poll_interval,
        )
        self.controller = Controller(
            config=config,
            router=self.router,
            supervisor=self.supervisor,
            state=self.state,
            python=python,
            env_provider=self.database.env_for if self.database is not None else None,
        )
        self._admin: web.AppRunner | None = None
        self.urls: dict[str, str] = {}
        self.initial_deploy: int | None = None

    @property
    def admin_url(self) -> str:
        """The admin API's base URL (after :meth:`start`)."""
        return self.urls["admin"]

    @property
    def public_url(self) -> str:
        """The public listener's URL (after :meth:`start`)."""
        return self.urls["public"]

    @property
    def preview_url(self) -> str:
        """The preview listener's URL (after :meth:`start`)."""
        return self.urls["preview"]

    def request_shutdown(self) -> None:
        """Ask :meth:`wait` to return (the caller then calls :meth:`stop`)."""
        self._shutdown.set()

    async def wait(self) -> None:
        """Until shutdown is requested."""
        await self._shutdown.wait()

    async def start(self) -> None:
        """Bind listeners, recover, serve what is live; deploy ``initial`` if nothing is."""
        self._started = True
        cfg = self.config
        try:
            await self.router.start()
            self.urls["public"] = _url(cfg.listen.public.host, self.router.public_port)
            preview_port = self.router.preview_port
            assert preview_port is not None
            self.urls["preview"] = _url(cfg.listen.preview.host, preview_port)
            ctx = AdminContext(
                config=cfg,
                token=self.token,
                controller=self.controller,
                router=self.router,
                supervisor=self.supervisor,
                state=self.state,
                urls=self.urls,
                shutdown=self.request_shutdown,
            )
            self._admin = web.AppRunner(make_app(ctx), access_log=None, shutdown_timeout=2.0)
            await self._admin.setup()
            site = web.TCPSite(self._admin, cfg.listen.admin.host, cfg.listen.admin.port)
            await site.start()
            admin_port = int(self._admin.addresses[0][1])
            self.urls["admin"] = _url(cfg.listen.admin.host, admin_port)
            self._write_files()
            await self.controller.start()
            if self.state.current().live_colour is None and self.initial is not None:
                self.initial_deploy = await self.controller.start_deploy(self.initial)
        except BaseException:
            await self.stop()
            raise

    def _write_files(self) -> None:
        if not self.write_files:
            return
        d = self.config.state.dir
        d.mkdir(parents=True, exist_ok=True)
        info = {"pid": os.getpid(), **self.urls}
        tmp = d / f".{INFO_FILE}.tmp"
        tmp.write_text(json.dumps(info), encoding="utf-8")
        tmp.replace(d / INFO_FILE)
        (d / PID_FILE).write_text(f"{os.getpid()}\n", encoding="utf-8")

    def _remove_files(self) -> None:
        if not self.write_files:
            return
        for name in (INFO_FILE, PID_FILE):
            path = self.config.state.dir / name
            with contextlib.suppress(OSError):
                # Only our own files: a newer daemon may have replaced them.
                if path.read_text(encoding="utf-8").find(str(os.getpid())) >= 0:
                    path.unlink()

    async def stop(self) -> None:
        """Stop everything started, in reverse order. Idempotent."""
        if self.stopped.is_set() or not self._started:
            self.stopped.set()
            return
        try:
            await self.controller.close()
            if self._admin is not None:
                await self._admin.cleanup()
                self._admin = None
            await self.supervisor.stop_all()
            await self.router.stop()
            if self.database is not None:
                cur = self.state.current()
                live = (
                    self.controller.release_from_state(cur.live_release)
                    if cur.live_release
                    else None
                )
                await self.database.stop(live)
        finally:
            self.state.close()
            self._remove_files()
            self.stopped.set()


async def run_daemon(
    config: Config,
    *,
    token: str,
    initial: DeployRequest | None,
    announce: bool = True,
) -> int:
    """Run a daemon in the foreground until SIGINT/SIGTERM or ``/api/shutdown``."""
    daemon = Daemon(config, token=token, initial=initial)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, daemon.request_shutdown)
    try:
        await daemon.start()
        if announce:
            print(
                f"bluegreen: {config.app.name} public {daemon.public_url}, preview "
                f"{daemon.preview_url}, dashboard {daemon.admin_url}/",
                flush=True,
            )
            if daemon.initial_deploy is not None:
                print(f"bluegreen: first deploy #{daemon.initial_deploy} started", flush=True)
        await daemon.wait()
        if announce:
            print("bluegreen: stopping", flush=True)
    finally:
        await daemon.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return 0
