"""The long-running bluegreen process: admin API + supervisor + controller, driving Envoy.

Promises:

* :meth:`Daemon.start` starts (or adopts) Envoy, binds the admin API, obtains the shared database
  URL (``[database] url_command``) before any instance starts, recovers from an
  interrupted run and serves what the state store says is live;
* :meth:`Daemon.stop` stops everything, in order: the running deploy (interrupted), the
  admin API, every instance, Envoy, then the database (``stop_command``); with
  ``everything=False`` only the daemon: Envoy, the instances and the database keep serving,
  and the next daemon adopts them. It is safe to call twice;
* :func:`run_daemon` runs it in the foreground until SIGINT (everything), SIGTERM (the
  daemon alone) or ``POST /api/shutdown`` (everything); SIGHUP stops nothing;
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
import time
from collections.abc import Mapping
from pathlib import Path

from aiohttp import web

from bluegreen import processes
from bluegreen.admin import AdminContext, make_app
from bluegreen.config import Config, DatabaseConfig, http_url
from bluegreen.controller import Controller, DeployRequest
from bluegreen.dataplane.envoy import Envoy
from bluegreen.environment import Environment, base_env
from bluegreen.errors import DatabaseError
from bluegreen.hooks import render, run_hook
from bluegreen.private import write_private
from bluegreen.release import Release
from bluegreen.scrub import KNOWN
from bluegreen.state import StateStore
from bluegreen.steps import ControlPlane
from bluegreen.summary import ready_line
from bluegreen.supervisor import Instance, Supervisor
from bluegreen.traffic import StatsHistory

logger = logging.getLogger(__name__)

TOKEN_FILE = "admin-token"  # noqa: S105 - a file name
INFO_FILE = "daemon.json"
PID_FILE = "daemon.pid"
LOG_FILE = "daemon.log"
CHECK_TIMEOUT = 5.0  # seconds the supervisor waits for an instance's ready path


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
    token = secrets.token_urlsafe(32)
    write_private(token_path(config), token + "\n")
    return token, True


def read_info(config: Config) -> dict[str, object] | None:
    """``daemon.json`` of a daemon that runs (or ran and died), or ``None``."""
    try:
        data = json.loads((config.state.dir / INFO_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


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
        return render(template, release, None)

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
                    scrub=False,  # its output is the URL, password included
                )
                urls = [line.strip() for line in lines if "://" in line]
                if not result.ok or not urls:
                    raise DatabaseError(
                        f"database url_command failed (exit {result.exit_code}):\n{result.output}"
                    )
                self.url = urls[-1]
                KNOWN.add_env({self.config.env: self.url})  # its password, from now on
                self._release = release
                logger.info("database ready (%s)", self.url.split("@")[-1])
            return {self.config.env: self.url}

    async def stop(self, release: Release | None, *, started_here: bool = True) -> None:
        """Run ``stop_command`` (from ``release`` or the one that started it), if any;
        ``started_here=False``: also when this process never asked for the URL (the
        database a dead daemon left running)."""
        release = release if release is not None and release.dir.is_dir() else self._release
        if self.config.stop_command is None or release is None:
            return
        if self.url is None and started_here:
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
        # Masked in every hook's output from now on (bluegreen.scrub).
        KNOWN.add(token)
        if config.state.dir_env:
            KNOWN.add_dir(config.state.app / "secrets")
        self.initial = initial
        self.python = python
        self.write_files = write_files
        self.stopped = asyncio.Event()
        self._shutdown = asyncio.Event()
        self._stop_everything = True
        self._started = False
        self._adopted = False
        self.database = (
            Database(config.database, base_env(config), config.timeouts.hook)
            if config.database is not None
            else None
        )
        self.state = StateStore(config.state.db_path)
        self.envoy = Envoy(config.dataplane, state_dir=config.state.dir, app_paths=config.app.paths)
        # Envoy health-checks the instances itself: the supervisor's health is for
        # readiness gates and status, not routing.
        self.supervisor = Supervisor(
            on_change=lambda: None,
            log_dir=config.state.logs_dir,
            poll_interval=poll_interval,
            # A loaded instance answers its ready path slowly; the readiness gate must not
            # call it dead for that (routing health is Envoy's own, with its own timeout).
            check_timeout=CHECK_TIMEOUT,
            on_process=self._record_instance,
        )
        self.rehearsal_runner = Supervisor(
            on_change=lambda: None, log_dir=config.state.logs_dir, poll_interval=poll_interval
        )
        self.plane = ControlPlane(
            config=config,
            state=self.state,
            supervisor=self.supervisor,
            dataplane=self.envoy,
            rehearsal_runner=self.rehearsal_runner,
            environment=Environment(
                config, self.database.env_for if self.database is not None else None
            ),
            traffic=StatsHistory(),
            python=python,
        )
        self.controller = Controller(self.plane)
        self._admin: web.AppRunner | None = None
        self.urls: dict[str, str] = {}
        self.initial_deploy: int | None = None

    @property
    def https_url(self) -> str | None:
        """The HTTPS listener's URL (after :meth:`start`), if TLS is on."""
        return self.urls.get("https")

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

    def _record_instance(self, inst: Instance) -> None:
        if inst.pid is None:
            self.state.forget_instance(inst.id)
        else:
            self.state.record_instance(
                inst.id,
                colour=inst.colour,
                release_id=inst.release.id,
                host=inst.host,
                port=inst.port,
                pid=inst.pid,
            )

    def request_shutdown(self, *, everything: bool = True) -> None:
        """Ask :meth:`wait` to return (the caller then calls :meth:`stop`): ``everything``
        (``bluegreen down``, Ctrl-C) or the daemon alone, traffic going on (SIGTERM)."""
        self._stop_everything = everything
        self._shutdown.set()

    @property
    def stop_everything(self) -> bool:
        """What the requested shutdown stops: everything, or the daemon alone."""
        return self._stop_everything

    async def wait(self) -> None:
        """Until shutdown is requested."""
        await self._shutdown.wait()

    async def start(self) -> None:
        """Bind listeners, recover, serve what is live; deploy ``initial`` if nothing is."""
        self._started = True
        cfg = self.config
        try:
            self._adopted = adopted = await self.envoy.start()
            logger.info("envoy %s (pid %s)", "adopted" if adopted else "started", self.envoy.pid)
            self.urls.update(self.envoy.urls())
            ctx = AdminContext(
                config=cfg,
                token=self.token,
                controller=self.controller,
                urls=self.urls,
                shutdown=self.request_shutdown,
            )
            self._admin = web.AppRunner(make_app(ctx), access_log=None, shutdown_timeout=2.0)
            await self._admin.setup()
            site = web.TCPSite(self._admin, cfg.listen.admin.host, cfg.listen.admin.port)
            await site.start()
            admin_port = int(self._admin.addresses[0][1])
            self.urls["admin"] = http_url(cfg.listen.admin.host, admin_port)
            await self.controller.start()
            # Only now: `up --detach` returns once these exist and the API answers, so a
            # status right after it shows what was adopted.
            self._write_files()
            if self.state.current().live_colour is None and self.initial is not None:
                self.initial_deploy = await self.controller.start_deploy(self.initial)
        except BaseException:
            # What this daemon adopted serves on: a failed start must not take it down.
            await self.stop(everything=not self._adopted)
            raise

    def _write_files(self) -> None:
        if not self.write_files:
            return
        d = self.config.state.dir
        info = {"pid": os.getpid(), **self.urls}
        write_private(d / INFO_FILE, json.dumps(info))
        write_private(d / PID_FILE, f"{os.getpid()}\n")

    def _remove_files(self) -> None:
        if not self.write_files:
            return
        for name in (INFO_FILE, PID_FILE):
            path = self.config.state.dir / name
            with contextlib.suppress(OSError):
                # Only our own files: a newer daemon may have replaced them.
                if path.read_text(encoding="utf-8").find(str(os.getpid())) >= 0:
                    path.unlink()

    async def stop(self, *, everything: bool = True) -> None:
        """Stop what runs, in reverse order. ``everything``: instances, Envoy and the database
        too; otherwise only the daemon (a running deploy is interrupted and cleaned up) and
        Envoy, the instances and the database keep serving for the next daemon to adopt.
        Idempotent."""
        if self.stopped.is_set() or not self._started:
            self.stopped.set()
            return
        try:
            await self.controller.close()
            if self._admin is not None:
                await self._admin.cleanup()
                self._admin = None
            await self.rehearsal_runner.stop_all()
            if not everything:
                await self.supervisor.detach_all()
                logger.info("daemon stopped; Envoy, instances and database keep serving")
                return
            await self.supervisor.stop_all()
            await self.envoy.stop()
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


async def stop_leftovers(config: Config) -> list[str]:
    """``bluegreen down`` with no daemon (it died): stop what it left serving, Envoy, every
    process of this state dir and the database. What was stopped, line by line."""
    notes: list[str] = []
    envoy = Envoy(config.dataplane, state_dir=config.state.dir, app_paths=config.app.paths)
    await envoy.stop()
    for pid, env in processes.marked(config.state.dir).items():
        await processes.kill_group(pid, grace=10.0)
        notes.append(f"stopped {env.get(processes.INSTANCE_ENV, 'a hook')} (pid {pid})")
    if not config.state.db_path.exists():
        return notes
    with StateStore(config.state.db_path) as state:
        for inst in state.instances():
            state.forget_instance(inst.id)
        cur = state.current()
        rec = state.release(cur.live_release) if cur.live_release else None
    if config.database is not None and rec is not None and rec.path.is_dir():
        release = Release(
            id=rec.id,
            dir=rec.path,
            python=rec.venv_path / "bin" / "python",
            deps_hash=rec.deps_hash,
            source="state",
            venv=rec.venv_path,
        )
        db = Database(config.database, base_env(config), config.timeouts.hook)
        await db.stop(release, started_here=False)
        notes.append("database stop command run")
    return notes


async def wait_live(state: StateStore, deploy_id: int | None, *, poll: float = 0.2) -> bool:
    """True once a colour is live; False if deploy ``deploy_id`` ended with none live."""
    while True:
        if state.current().live_colour is not None:
            return True
        deploy = state.deploy(deploy_id) if deploy_id is not None else None
        if deploy is not None and deploy.status != "running":
            return state.current().live_colour is not None
        await asyncio.sleep(poll)


async def _announce_ready(daemon: Daemon, started: float) -> None:
    """Print one line once the app serves through Envoy (after the first deploy, if any)."""
    if await wait_live(daemon.state, daemon.initial_deploy):
        line = ready_line(
            daemon.config.app.name,
            public=daemon.public_url,
            https=daemon.https_url,
            dashboard=daemon.admin_url,
            seconds=time.monotonic() - started,
        )
    else:
        line = f"bluegreen: first deploy #{daemon.initial_deploy} failed: see `bluegreen history`"
    print(line, flush=True)


async def run_daemon(
    config: Config,
    *,
    token: str,
    initial: DeployRequest | None,
    announce: bool = True,
) -> int:
    """Run a daemon in the foreground until a signal or ``/api/shutdown``.

    SIGINT (Ctrl-C) and ``/api/shutdown`` (``bluegreen down``) stop everything; SIGTERM stops
    the daemon alone (an upgrade, a restart: Envoy, instances and database keep serving);
    SIGHUP (a closed terminal) is ignored: nothing goes down.
    """
    started = time.monotonic()
    daemon = Daemon(config, token=token, initial=initial)
    loop = asyncio.get_running_loop()
    ready: asyncio.Task[None] | None = None
    loop.add_signal_handler(signal.SIGINT, daemon.request_shutdown)
    loop.add_signal_handler(signal.SIGTERM, lambda: daemon.request_shutdown(everything=False))
    loop.add_signal_handler(signal.SIGHUP, lambda: logger.info("SIGHUP ignored: nothing stops"))
    try:
        await daemon.start()
        if announce:
            https = f" and {daemon.https_url}" if daemon.https_url else ""
            print(
                f"bluegreen: {config.app.name} on {daemon.public_url}{https} (through Envoy), "
                f"preview {daemon.preview_url}, dashboard {daemon.admin_url}/",
                flush=True,
            )
            if daemon.initial_deploy is not None:
                print(f"bluegreen: first deploy #{daemon.initial_deploy} started", flush=True)
            ready = asyncio.create_task(_announce_ready(daemon, started))
        await daemon.wait()
        if announce:
            what = "everything" if daemon.stop_everything else "the daemon (traffic goes on)"
            print(f"bluegreen: stopping {what}", flush=True)
    finally:
        if ready is not None:
            ready.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ready
        await daemon.stop(everything=daemon.stop_everything)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)
    return 0
