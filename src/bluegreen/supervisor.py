"""Start, watch, restart and stop app instance processes.

Promises:

* each instance runs in its own session on a port picked for it, so it outlives the
  daemon; its combined stdout/stderr goes straight to ``<log_dir>/<id>.log`` (never through
  a pipe to the daemon), whose tail :meth:`Instance.logs` reads;
* :meth:`Supervisor.adopt` takes over an instance a previous daemon started;
  :meth:`Supervisor.detach_all` lets go of every instance without stopping it;
  ``on_process`` is told each instance's pid whenever it changes (``None``: stopped);
* health = the ready path answering 2xx. It is probed every ``poll_interval``
  (faster while not healthy); ``unhealthy_after`` consecutive failures, a
  process exit, or :meth:`Supervisor.mark_failed` make the instance unhealthy,
  the next good probe healthy again. Every change calls ``on_change()`` so the
  controller can rebuild the routing table;
* a process that exits while it should run is restarted **on the same port**
  (so routing entries stay valid; if another process took the port meanwhile,
  the restart fails and is retried) after a backoff of 0.5 s, 1, 2, ... capped
  at 10 s, reset once an instance ran healthy for 30 s;
* :meth:`Supervisor.stop_instance` / :meth:`Supervisor.stop_all` SIGTERM the
  whole process group, SIGKILL it after the timeout: no orphans are left.

Instances get, over the controller's environment (minus the admin token):
``release.env()``, then the caller's ``env``, then ``BLUEGREEN_RELEASE``,
``BLUEGREEN_COLOUR`` (and ``BLUEGREEN_COLOR``), ``BLUEGREEN_INSTANCE`` and
``BLUEGREEN_PORT``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import shlex
import signal
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Literal

import httpx

from bluegreen import processes
from bluegreen.config import Colour, http_url
from bluegreen.environment import instance_env
from bluegreen.errors import ReadyTimeout
from bluegreen.hooks import child_env
from bluegreen.private import open_private, private_dir
from bluegreen.release import Release

logger = logging.getLogger(__name__)

InstanceState = Literal["starting", "running", "crashed", "stopping", "stopped"]
LOG_TAIL_BYTES = 256 * 1024


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free on ``host`` a moment ago (bind port 0, read it, close)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Instance:
    """One supervised app process. Attributes are maintained by the supervisor; read only."""

    def __init__(
        self,
        *,
        id: str,
        colour: Colour,
        release: Release,
        host: str,
        port: int,
        command_for: Callable[[int], Sequence[str]],
        env: Mapping[str, str],
        cwd: Path,
        live_path: str,
        ready_path: str,
        log_path: Path,
        ring_lines: int,
    ) -> None:
        self.id = id
        self.colour: Colour = colour
        self.release = release
        self.host = host
        self.port = port
        self.command_for = command_for
        self.env = dict(env)
        self.cwd = cwd
        self.live_path = live_path
        self.ready_path = ready_path
        self.log_path = log_path
        self.state: InstanceState = "starting"
        self.healthy = False
        self.ever_ready = False
        self.pid: int | None = None
        self.exits = 0
        self.restarts = 0
        self.last_exit_code: int | None = None
        self._ring: collections.deque[str] = collections.deque(maxlen=ring_lines)
        self._logfile: IO[str] | None = None
        self._adopt_pid: int | None = None  # a running process to watch before starting one
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._recycling = False
        self._stop_event = asyncio.Event()
        self._failures = 0
        self._healthy_since: float | None = None

    def __repr__(self) -> str:
        return (
            f"Instance({self.id!r}, {self.colour}, port={self.port}, pid={self.pid}, "
            f"state={self.state}, healthy={self.healthy})"
        )

    @property
    def url(self) -> str:
        """``http://host:port`` of the instance."""
        return http_url(self.host, self.port)

    def logs(self, lines: int | None = None) -> list[str]:
        """The last ``lines`` lines of the instance's log file (its output and the
        supervisor's notes; the last ``ring_lines`` by default)."""
        want = self._ring.maxlen or 500 if lines is None else lines
        if want <= 0:
            return []
        try:
            with self.log_path.open("rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - LOG_TAIL_BYTES))
                data = f.read()
        except OSError:
            return list(self._ring)[-want:]
        text = data.decode("utf-8", "replace").splitlines()
        if size > LOG_TAIL_BYTES:
            text = text[1:]  # the first line is probably cut
        return text[-want:]

    def _log(self, line: str) -> None:
        self._ring.append(line)
        if self._logfile is not None:
            try:
                self._logfile.write(line + "\n")
            except (OSError, ValueError):  # pragma: no cover - disk full / closed
                logger.warning("cannot write log of %s", self.id)


class Supervisor:
    """Runs :class:`Instance` processes; use as ``async with`` or call :meth:`stop_all`."""

    def __init__(
        self,
        *,
        on_change: Callable[[], None],
        log_dir: Path,
        on_process: Callable[[Instance], None] | None = None,
        host: str = "127.0.0.1",
        poll_interval: float = 0.5,
        starting_poll_interval: float = 0.1,
        check_timeout: float = 1.0,
        unhealthy_after: int = 2,
        backoff_initial: float = 0.5,
        backoff_max: float = 10.0,
        backoff_reset_after: float = 30.0,
        max_start_crashes: int = 3,
        ring_lines: int = 500,
    ) -> None:
        self._on_change = on_change
        self._on_process_cb = on_process
        self._detached = False
        self.log_dir = log_dir
        self.host = host
        self.poll_interval = poll_interval
        self.starting_poll_interval = starting_poll_interval
        self.check_timeout = check_timeout
        self.unhealthy_after = unhealthy_after
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.backoff_reset_after = backoff_reset_after
        self.max_start_crashes = max_start_crashes
        self.ring_lines = ring_lines
        self._instances: dict[str, Instance] = {}
        self._client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> Supervisor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop_all()

    # ------------------------------------------------------------------ queries

    def instances(self, colour: Colour | None = None) -> list[Instance]:
        """Supervised instances (of ``colour``), in start order."""
        return [i for i in self._instances.values() if colour is None or i.colour == colour]

    def get(self, instance_id: str) -> Instance | None:
        """The instance with that id, or ``None``."""
        return self._instances.get(instance_id)

    # ------------------------------------------------------------------ lifecycle

    async def start_instance(
        self,
        *,
        id: str,
        colour: Colour,
        release: Release,
        command_for: Callable[[int], Sequence[str]],
        env: Mapping[str, str],
        cwd: Path,
        live_path: str,
        ready_path: str,
    ) -> Instance:
        """Pick a free port, start ``command_for(port)`` and supervise it.

        Returns at once (the instance is not ready yet: see :meth:`wait_ready`).
        """
        if id in self._instances:
            raise ValueError(f"instance {id!r} is already supervised")
        private_dir(self.log_dir)
        port = free_port(self.host)
        argv = list(command_for(port))  # fail here, to the caller, on a broken template
        if not argv:
            raise ValueError(f"instance {id!r}: empty command")
        full_env = instance_env(release, colour, env, instance_id=id, port=port)
        inst = Instance(
            id=id,
            colour=colour,
            release=release,
            host=self.host,
            port=port,
            command_for=command_for,
            env=full_env,
            cwd=cwd,
            live_path=live_path,
            ready_path=ready_path,
            log_path=self.log_dir / f"{id}.log",
            ring_lines=self.ring_lines,
        )
        inst._logfile = open_private(inst.log_path)
        self._instances[id] = inst
        inst._task = asyncio.create_task(self._run(inst), name=f"bluegreen-instance-{id}")
        self._notify()
        return inst

    def adopt(
        self,
        *,
        id: str,
        colour: Colour,
        release: Release,
        pid: int,
        port: int,
        command_for: Callable[[int], Sequence[str]],
        env: Mapping[str, str],
        cwd: Path,
        live_path: str,
        ready_path: str,
    ) -> Instance:
        """Supervise an instance a previous daemon started (``pid`` serving on ``port``)
        as if it were ours: watched, health-checked, restarted on its port if it exits."""
        if id in self._instances:
            raise ValueError(f"instance {id!r} is already supervised")
        private_dir(self.log_dir)
        inst = Instance(
            id=id,
            colour=colour,
            release=release,
            host=self.host,
            port=port,
            command_for=command_for,
            env=instance_env(release, colour, env, instance_id=id, port=port),
            cwd=cwd,
            live_path=live_path,
            ready_path=ready_path,
            log_path=self.log_dir / f"{id}.log",
            ring_lines=self.ring_lines,
        )
        inst._logfile = open_private(inst.log_path)
        inst._adopt_pid = inst.pid = pid
        inst.state = "running"
        self._instances[id] = inst
        inst._task = asyncio.create_task(self._run(inst), name=f"bluegreen-instance-{id}")
        self._notify()
        return inst

    async def detach_all(self) -> None:
        """Stop supervising, leaving every instance process running (the daemon exits, the
        traffic goes on; the next daemon adopts them)."""
        self._detached = True
        tasks = [i._task for i in self._instances.values() if i._task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for inst in self._instances.values():
            if inst._logfile is not None:
                inst._logfile.close()
                inst._logfile = None
        self._instances.clear()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _on_process(self, inst: Instance) -> None:
        if self._on_process_cb is not None:
            try:
                self._on_process_cb(inst)
            except Exception:
                logger.exception("on_process callback failed")

    async def stop_instance(self, inst: Instance, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """SIGTERM the instance's process group, SIGKILL after ``timeout``; forget it."""
        if inst.state == "stopped":
            return
        inst._stopping = True
        inst._stop_event.set()
        inst.state = "stopping"
        self._set_health(inst, False, why="stopping")
        pid = inst.pid
        if pid is not None and processes.alive(pid):
            inst._log(f"[supervisor] stopping pid {pid}")
            await processes.kill_group(pid, grace=timeout)
        if inst._task is not None:
            await inst._task
        inst.state = "stopped"
        inst.pid = None
        self._on_process(inst)
        if inst._logfile is not None:
            inst._logfile.close()
            inst._logfile = None
        self._instances.pop(inst.id, None)
        self._notify()

    async def recycle(self, inst: Instance, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Stop the instance's process gracefully (SIGTERM to its group, SIGKILL after
        ``timeout``) and start it again at once on the same port: the app closes its open
        connections (websockets with a going-away code) and comes back with none. Not
        counted as a crash. Returns once the old process is gone."""
        pid = inst.pid
        if inst._stopping or pid is None or not processes.alive(pid):
            return
        inst._recycling = True
        self._set_health(inst, False, why="told to go away (recycled)")
        inst._log(f"[supervisor] recycling pid {pid}")
        await processes.kill_group(pid, grace=timeout)

    async def stop_all(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Stop every instance (concurrently) and close the health-check client."""
        await asyncio.gather(
            *(self.stop_instance(i, timeout) for i in list(self._instances.values()))
        )
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # ------------------------------------------------------------------ health

    def mark_failed(self, instance_id: str) -> None:
        """The router could not connect: unhealthy now, until the next good ready check."""
        inst = self._instances.get(instance_id)
        if inst is None or inst._stopping:
            return
        inst._failures = 0
        self._set_health(inst, False, why="marked failed by the router")

    async def wait_ready(self, instances: Iterable[Instance], timeout: float) -> None:  # noqa: ASYNC109
        """Return once all ``instances`` are healthy.

        Raises :class:`ReadyTimeout` naming those that are not after ``timeout``
        seconds, or earlier if one crashed ``max_start_crashes`` times without
        ever being ready; the message has the tail of their logs.
        """
        wanted = list(instances)
        deadline = time.monotonic() + timeout
        while True:
            pending = [i for i in wanted if not i.healthy]
            if not pending:
                return
            hopeless = [
                i
                for i in pending
                if i.state in ("stopping", "stopped")
                or (not i.ever_ready and i.exits >= self.max_start_crashes)
            ]
            if hopeless:
                raise self._ready_error(
                    hopeless, "failed before becoming ready (crashed repeatedly or stopped)"
                )
            if time.monotonic() >= deadline:
                raise self._ready_error(pending, f"did not become ready within {timeout:g}s")
            await asyncio.sleep(0.05)

    def _ready_error(self, bad: list[Instance], what: str) -> ReadyTimeout:
        parts = [f"instance(s) {', '.join(i.id for i in bad)} {what}"]
        for i in bad:
            exit_note = f", exited {i.exits}x (last code {i.last_exit_code})" if i.exits else ""
            parts.append(
                f"--- {i.id} ({i.url}{i.ready_path}, state {i.state}{exit_note}); "
                f"last log lines ({i.log_path}):"
            )
            parts.extend(f"  {line}" for line in i.logs(20))
        return ReadyTimeout("\n".join(parts), [i.id for i in bad])

    def _notify(self) -> None:
        try:
            self._on_change()
        except Exception:
            logger.exception("on_change callback failed")

    def _set_health(self, inst: Instance, healthy: bool, *, why: str) -> None:
        if inst.healthy == healthy:
            return
        inst.healthy = healthy
        if healthy:
            inst.ever_ready = True
            inst._healthy_since = time.monotonic()
        else:
            inst._healthy_since = None
        inst._log(f"[supervisor] {'healthy' if healthy else 'unhealthy'}: {why}")
        self._notify()

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.check_timeout, trust_env=False)
        return self._client

    async def _probe(self, inst: Instance) -> tuple[bool, str]:
        url = f"{inst.url}{inst.ready_path}"
        try:
            resp = await self._http().get(url)
        except httpx.HTTPError as exc:
            return False, f"GET {inst.ready_path}: {type(exc).__name__}"
        return 200 <= resp.status_code < 300, f"GET {inst.ready_path}: {resp.status_code}"

    async def _poll(self, inst: Instance) -> None:
        while True:
            await asyncio.sleep(self.poll_interval if inst.healthy else self.starting_poll_interval)
            ok, detail = await self._probe(inst)
            if inst._stopping:
                return
            if ok:
                inst._failures = 0
                self._set_health(inst, True, why=detail)
            else:
                inst._failures += 1
                if inst._failures >= self.unhealthy_after:
                    self._set_health(inst, False, why=f"{inst._failures} failed checks, {detail}")

    # ------------------------------------------------------------------ process

    async def _run(self, inst: Instance) -> None:
        backoff = self.backoff_initial
        while not inst._stopping:
            argv = list(inst.command_for(inst.port))
            inst.state = "starting"
            rc: int | None = None
            pid, inst._adopt_pid = inst._adopt_pid, None
            if pid is not None:
                inst._log(f"[supervisor] adopted pid {pid} on port {inst.port}")
                rc = await self._watch(inst, pid)
            else:
                try:
                    pid = processes.spawn(
                        argv, cwd=inst.cwd, env=child_env(inst.env), log=inst.log_path
                    )
                except OSError as exc:
                    inst._log(f"[supervisor] cannot start {shlex.join(argv)}: {exc}")
                else:
                    inst._log(
                        f"[supervisor] started pid {pid} on port {inst.port}: {shlex.join(argv)}"
                    )
                    rc = await self._watch(inst, pid)
            if inst._stopping:
                break
            if inst._recycling:
                inst._recycling = False
                inst.restarts += 1
                continue
            # The process ended (or never started) while it should run: a crash.
            inst.exits += 1
            inst.last_exit_code = rc
            inst.state = "crashed"
            if not inst.healthy:
                self._notify()
            healthy_for = (
                time.monotonic() - inst._healthy_since if inst._healthy_since is not None else 0.0
            )
            self._set_health(inst, False, why=f"process exited with code {rc}")
            if healthy_for >= self.backoff_reset_after:
                backoff = self.backoff_initial
            inst._log(f"[supervisor] exited with code {rc}; restarting in {backoff:g}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(inst._stop_event.wait(), backoff)
            backoff = min(backoff * 2, self.backoff_max)
            if not inst._stopping:
                inst.restarts += 1

    async def _watch(self, inst: Instance, pid: int) -> int | None:
        inst.pid = pid
        inst.state = "running"
        inst._failures = 0
        self._on_process(inst)
        poller = asyncio.create_task(self._poll(inst))
        try:
            if inst._stopping:  # stop requested while we were spawning
                await processes.kill_group(pid, grace=1.0)
            rc = await processes.wait(pid)
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
        if not self._detached:
            # Leftover group members would keep the port busy.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        return rc
