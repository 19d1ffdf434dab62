"""Envoy's admin API, over a unix socket or loopback TCP: is it up, which config
versions has it applied, how healthy are its hosts, what are its stats."""

from __future__ import annotations

import json
import re
from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp

from bluegreen.dataplane.errors import DataPlaneError

Json = dict[str, Any]


EndpointSet = frozenset[tuple[str, str, int]]


def endpoint_set(assignment: Json) -> EndpointSet:
    """(hostname, address, port) of each endpoint of a ``ClusterLoadAssignment``."""
    result: set[tuple[str, str, int]] = set()
    for locality in assignment.get("endpoints", []):
        for lb in locality.get("lb_endpoints", []):
            endpoint = lb.get("endpoint", {})
            sock = endpoint.get("address", {}).get("socket_address", {})
            result.add(
                (
                    str(endpoint.get("hostname", "")),
                    str(sock.get("address")),
                    int(sock.get("port_value", 0)),
                )
            )
    return frozenset(result)


class AdminError(DataPlaneError):
    """Envoy's admin did not answer, or answered something unexpected."""


class EnvoyAdmin:
    """A short-lived client: ``async with EnvoyAdmin(address) as admin: ...``.

    ``address`` is ``HOST:PORT`` or a unix socket path (anything containing ``/``).
    """

    def __init__(self, address: str, *, timeout: float = 5.0) -> None:
        self.address = address
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        if "/" in address:
            self._base = "http://envoy-admin"
        else:
            self._base = f"http://{address}"

    async def __aenter__(self) -> EnvoyAdmin:
        connector: aiohttp.BaseConnector
        if "/" in self.address:
            connector = aiohttp.UnixConnector(path=self.address)
        else:
            connector = aiohttp.TCPConnector()
        self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def text(self, path: str, *, method: str = "GET") -> str:
        """The body of ``path``; :class:`AdminError` if Envoy is not there or says no."""
        if self._session is None:
            raise RuntimeError("use EnvoyAdmin in 'async with'")
        try:
            async with self._session.request(method, self._base + path) as resp:
                body = await resp.text()
                if resp.status != 200:
                    raise AdminError(f"envoy admin {path}: HTTP {resp.status}: {body[:200]}")
                return body
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise AdminError(f"envoy admin {path}: {exc or type(exc).__name__}") from exc

    async def json(self, path: str) -> Json:
        data = json.loads(await self.text(path))
        if not isinstance(data, dict):
            raise AdminError(f"envoy admin {path}: expected a JSON object")
        return data

    async def server_info(self) -> Json:
        return await self.json("/server_info")

    async def listener_ports(self) -> dict[str, int]:
        """Bound port of each listener by name (real ports, also when 0 was asked)."""
        data = await self.json("/listeners?format=json")
        ports: dict[str, int] = {}
        for item in data.get("listener_statuses", []):
            sock = item.get("local_address", {}).get("socket_address", {})
            if "port_value" in sock:
                ports[str(item["name"])] = int(sock["port_value"])
        return ports

    async def route_versions(self) -> dict[str, str]:
        """Applied version of each dynamic route configuration by name."""
        data = await self.json("/config_dump?resource=dynamic_route_configs")
        return {
            str(c["route_config"]["name"]): str(c.get("version_info", ""))
            for c in data.get("configs", [])
            if "route_config" in c
        }

    async def endpoint_sets(self) -> dict[str, EndpointSet]:
        """The endpoints each cluster has, by (hostname, address, port). Envoy keeps no
        version for file-based endpoints, so :meth:`Envoy.apply` compares these."""
        data = await self.json("/config_dump?resource=dynamic_endpoint_configs&include_eds")
        result: dict[str, EndpointSet] = {}
        for c in data.get("configs", []):
            config = c.get("endpoint_config", {})
            if "cluster_name" in config:
                result[str(config["cluster_name"])] = endpoint_set(config)
        return result

    async def cluster_versions(self) -> dict[str, str]:
        """Version of each *active* (warmed) dynamic cluster by name."""
        data = await self.json("/config_dump?resource=dynamic_active_clusters")
        return {
            str(c["cluster"]["name"]): str(c.get("version_info", ""))
            for c in data.get("configs", [])
            if "cluster" in c
        }

    async def healthy_hosts(self) -> dict[str, int]:
        """Hosts of each cluster that pass their health checks."""
        data = await self.json("/clusters?format=json")
        result: dict[str, int] = {}
        for cluster in data.get("cluster_statuses", []):
            healthy = 0
            for host in cluster.get("host_statuses", []):
                status = host.get("health_status", {})
                failed = any(k.startswith("failed") and v for k, v in status.items())
                if not failed and status.get("eds_health_status", "HEALTHY") == "HEALTHY":
                    healthy += 1
            result[str(cluster["name"])] = healthy
        return result

    async def stat_value(self, name: str) -> int:
        """Current value of the counter or gauge ``name`` (0 if Envoy has none yet)."""
        data = await self.json(f"/stats?format=json&filter={quote('^' + re.escape(name) + '$')}")
        for item in data.get("stats", []):
            if item.get("name") == name and "value" in item:
                return int(item["value"])
        return 0

    async def prometheus(self, name_filter: str) -> str:
        """``/stats/prometheus`` restricted to stats whose name matches ``name_filter``."""
        return await self.text(f"/stats/prometheus?filter={quote(name_filter)}")
