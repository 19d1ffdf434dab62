"""Envoy's static bootstrap: admin, listeners, limits, stats; clusters from CDS. Pure.

Listeners are static on purpose: a switch changes routes only, and changing a listener
would drain its connections. A new bootstrap takes a hot restart (``Envoy.hot_restart``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bluegreen.dataplane.resources import path_source, seconds
from bluegreen.dataplane.settings import DataPlaneSettings, HostPort
from bluegreen.dataplane.stats import BUCKETS

Json = dict[str, Any]

HCM_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
    "HttpConnectionManager"
)
TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
SECRET_NAME = "public_cert"  # noqa: S105 (the name of an SDS resource)


@dataclass(frozen=True, slots=True)
class Layout:
    """Where this Envoy's files live, all under one directory of the state dir."""

    root: Path

    @property
    def xds(self) -> Path:
        """The watched files: clusters, endpoints, routes, certificate secret, each in a
        directory of its own (see :func:`~bluegreen.dataplane.resources.path_source`)."""
        return self.root / "xds"

    @property
    def tls(self) -> Path:
        """The generated certificate (when none is configured)."""
        return self.root / "tls"

    @property
    def bootstrap(self) -> Path:
        return self.root / "bootstrap.json"

    @property
    def pid_file(self) -> Path:
        return self.root / "envoy.pid"

    @property
    def table_file(self) -> Path:
        return self.root / "table.json"

    @property
    def log(self) -> Path:
        return self.root / "envoy.log"

    @property
    def admin_socket(self) -> Path:
        return self.root / "admin.sock"

    def xds_file(self, name: str) -> Path:
        return self.xds / name / f"{name}.json"


def admin_address(admin: str, layout: Layout) -> Json:
    """``HOST:PORT`` on loopback, or a unix socket path (the default)."""
    if not admin or "/" in admin:
        return {"pipe": {"path": admin or str(layout.admin_socket), "mode": 0o600}}
    host, _, port = admin.rpartition(":")
    return {"socket_address": {"address": host.strip("[]"), "port_value": int(port)}}


def bootstrap(s: DataPlaneSettings, layout: Layout, *, ports: dict[str, int] | None = None) -> Json:
    """The whole bootstrap. ``ports`` pins listeners that asked for port 0 to the port
    they got, so a hot restart finds the same sockets to take over."""
    ports = ports or {}
    https_port = (s.https.port or ports.get("https", 443)) if s.https is not None else 443
    listeners = [
        _listener(
            "public",
            s.public,
            ports,
            s,
            layout,
            redirect=https_port if s.redirect_http_to_https else 0,
        ),
        _listener("preview", s.preview, ports, s, layout),
    ]
    if s.https is not None:
        listeners.append(_listener("https", s.https, ports, s, layout, tls=True))
    monitor = (
        "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig"
    )
    return {
        "node": {"id": "bluegreen", "cluster": "bluegreen"},
        "admin": {"address": admin_address(s.admin, layout)},
        "dynamic_resources": {"cds_config": path_source(str(layout.xds_file("cds")))},
        "static_resources": {"listeners": listeners},
        # Histograms are merged when the admin asks, so stats() is never stale.
        "stats_flush_on_admin": True,
        "stats_config": {
            "histogram_bucket_settings": [
                {
                    "match": {"prefix": prefix},
                    "buckets": [round(b * 1000, 3) for b in BUCKETS],
                }
                # Clusters (per colour, shadow targets), and routes (per route group).
                for prefix in ("cluster.", "vhost.")
            ]
        },
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": f"type.googleapis.com/{monitor}",
                        "max_active_downstream_connections": s.max_connections,
                    },
                }
            ]
        },
    }


def _listener(
    name: str,
    addr: HostPort,
    ports: dict[str, int],
    s: DataPlaneSettings,
    layout: Layout,
    *,
    redirect: int = 0,
    tls: bool = False,
) -> Json:
    port = addr.port or ports.get(name, 0)
    chain: Json = {"filters": [_hcm(name, s, layout, redirect=redirect, tls=tls)]}
    if tls:
        chain["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": TLS_TYPE,
                "common_tls_context": {
                    # HTTP/1.1 only for now: browsers would carry websockets over h2 as
                    # extended CONNECT, which no test here covers yet.
                    "alpn_protocols": ["http/1.1"],
                    "tls_certificate_sds_secret_configs": [
                        {
                            "name": SECRET_NAME,
                            "sds_config": path_source(str(layout.xds_file("sds_cert"))),
                        }
                    ],
                },
            },
        }
    return {
        "name": name,
        "address": {"socket_address": {"address": addr.host, "port_value": port}},
        "per_connection_buffer_limit_bytes": s.buffer_bytes,
        "filter_chains": [chain],
    }


#: Envoy's own refusals (limits, timeouts, no instance reachable) answer in the same JSON
#: shape as the routes' direct responses; those direct responses keep their own bodies.
_REFUSALS = (408, 413, 431, 504)
_UPSTREAM_FLAGS = ["UH", "UF", "URX", "UC", "UT", "UMSDR", "NR"]


def local_replies() -> Json:
    """``local_reply_config``: JSON bodies for Envoy's own error answers."""
    body = {
        "json_format": {
            "error": "%RESPONSE_CODE_DETAILS%",
            "detail": "%LOCAL_REPLY_BODY%",
            "request_id": "%REQ(X-REQUEST-ID)%",
        },
        "content_type": "application/json",
    }
    status_filters = [
        {
            "status_code_filter": {
                "comparison": {"op": "EQ", "value": {"default_value": code, "runtime_key": "-"}}
            }
        }
        for code in _REFUSALS
    ]
    flag_filter = {"response_flag_filter": {"flags": _UPSTREAM_FLAGS}}
    return {
        "mappers": [
            {
                "filter": {"or_filter": {"filters": [*status_filters, flag_filter]}},
                "body_format_override": body,
            }
        ]
    }


def _hcm(name: str, s: DataPlaneSettings, layout: Layout, *, redirect: int, tls: bool) -> Json:
    """The HTTP connection manager; ``redirect`` (an HTTPS port) answers every request
    with a redirect there instead of routing it."""
    router = {
        "name": "envoy.filters.http.router",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
            "suppress_envoy_headers": True,
        },
    }
    body_limit = {
        "name": "envoy.filters.http.body_size_limit",
        "typed_config": {
            "@type": "type.googleapis.com/"
            "envoy.extensions.filters.http.body_size_limit.v3.BodySizeLimit",
            # Counts bytes as they stream through; nothing is buffered to count them.
            "max_request_bytes": s.max_body_bytes,
        },
    }
    route_name = name  # "public", "preview", or "https" (a Secure stickiness cookie)
    config: Json = {
        "@type": HCM_TYPE,
        "stat_prefix": name,
        "codec_type": "AUTO",
        "http_filters": [body_limit, router],
        # A websocket's frames skip the body limit (it would cap the socket's lifetime
        # bytes); Envoy streams them under flow control and never inflates them.
        "upgrade_configs": [{"upgrade_type": "websocket", "filters": [router]}],
        "use_remote_address": True,
        "xff_num_trusted_hops": s.trusted_hops,
        "generate_request_id": True,
        "always_set_request_id_in_response": True,
        "max_request_headers_kb": s.max_header_kib,
        "request_headers_timeout": seconds(s.header_timeout),
        "request_timeout": seconds(s.request_timeout),
        "common_http_protocol_options": {
            "idle_timeout": seconds(s.idle_timeout),
            "max_headers_count": s.max_headers,
        },
        "http2_protocol_options": {"allow_connect": True, "max_concurrent_streams": 128},
        "normalize_path": True,
        "server_header_transformation": "PASS_THROUGH",
        "local_reply_config": local_replies(),
    }
    if tls:
        config["forward_client_cert_details"] = "SANITIZE"
    if redirect:
        config["route_config"] = {
            "name": "redirect",
            "virtual_hosts": [
                {
                    "name": "redirect",
                    "domains": ["*"],
                    "routes": [
                        {
                            "match": {"prefix": "/"},
                            "redirect": {
                                "https_redirect": True,
                                "port_redirect": redirect,
                            },
                        }
                    ],
                }
            ],
        }
    else:
        config["rds"] = {
            "route_config_name": route_name,
            "config_source": path_source(str(layout.xds_file(f"rds_{route_name}"))),
        }
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": config}
