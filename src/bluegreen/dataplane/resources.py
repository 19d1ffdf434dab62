"""What Envoy reads from the watched directory: clusters, endpoints and routes. Pure.

One cluster per colour (EDS, health-checked, least request, outlier detection) whose
endpoints come from ``eds_<colour>.json``; one route configuration per listener kind
(``public`` and ``preview``). A switch rewrites the route files only.

Each file is a ``DiscoveryResponse`` whose ``version_info`` is a hash of its resources,
so "Envoy applied this file" is "Envoy reports this version".
"""

from __future__ import annotations

import hashlib
import html
import json
from pathlib import PurePath
from typing import Any

from bluegreen.dataplane.settings import AppPaths, DataPlaneSettings
from bluegreen.dataplane.stats import GROUPS, Group
from bluegreen.dataplane.table import COLOURS, COOKIE, Colour, Identity, RoutingTable

Json = dict[str, Any]

CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINTS_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
ROUTES_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"  # noqa: S105

PROTOCOL_OPTIONS_TYPE = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
ROUTE_NAMES: tuple[str, ...] = ("public", "preview")
#: Route configurations when the HTTPS listener is on: it has its own, whose stickiness
#: cookie is ``Secure`` (its virtual host is still named ``public``: same statistics).
TLS_ROUTE_NAMES: tuple[str, ...] = ("public", "preview", "https")
#: Route groups the statistics are kept apart for, matched in this order by path prefix.
PREFIXES: tuple[tuple[Group, str], ...] = (
    ("api", "/api/"),
    ("static", "/static/"),
    ("pages", "/"),
)
#: Mirrored requests: only these methods (never a write), never a websocket.
MIRRORED = "GET|HEAD"
#: Methods a retry after a reset cannot do harm with (RFC 9110 idempotent methods).
IDEMPOTENT = "GET|HEAD|OPTIONS|PUT|DELETE|TRACE"
SAFE_RETRY_ON = "connect-failure,refused-stream,reset,reset-before-request"
UNSAFE_RETRY_ON = "connect-failure,refused-stream,reset-before-request"

PAGE_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;"
    "color:#222}.emergency{border-left:.3rem solid #b3261e;padding:.2rem .8rem}"
)


def page_identity(table: RoutingTable, s: DataPlaneSettings) -> Identity:
    """Who the data plane's own pages name: what the live release said (``[identity] url``),
    else ``[identity]``'s values."""
    told = table.identity_of(table.live)
    if told is not None:
        return told
    return Identity(s.identity_name, s.identity_contact, s.identity_emergency)


def unavailable_page(title: str, message: str, who: Identity) -> str:
    """The data plane's own HTML page (maintenance, pause past its bound), naming the app's
    operator, how to reach them and what to do in an emergency."""
    name = html.escape(who.name)
    parts = [
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}{' – ' + name if name else ''}</title>",
        f"<style>{PAGE_STYLE}</style></head><body>",
        f"<p><strong>{name}</strong></p>" if name else "",
        f"<h1>{html.escape(title)}</h1><p>{html.escape(message)}</p>",
        f"<p>Contact: {html.escape(who.contact)}</p>" if who.contact else "",
        (
            f'<p class="emergency" role="alert">{html.escape(who.emergency)}</p>'
            if who.emergency
            else ""
        ),
        "</body></html>\n",
    ]
    return "".join(parts)


def seconds(value: float) -> str:
    """A protobuf Duration in JSON form."""
    return f"{value:.3f}s"


def discovery(resources: list[Json]) -> Json:
    """A ``DiscoveryResponse`` versioned by the hash of its resources."""
    body = json.dumps(resources, sort_keys=True, separators=(",", ":"))
    version = hashlib.sha256(body.encode()).hexdigest()[:16]
    return {"version_info": version, "resources": resources}


def path_source(path: str) -> Json:
    """A config source read from ``path``, reloaded when a file is moved into its directory.

    Each watched file has a directory of its own: Envoy reloads every subscription that
    watches a directory when any file is moved into it, so with one shared directory a
    switch (one route file) would also re-read every cluster's endpoints and every other
    route configuration first."""
    return {
        "resource_api_version": "V3",
        "path_config_source": {
            "path": path,
            "watched_directory": {"path": str(PurePath(path).parent)},
        },
    }


def route_names(s: DataPlaneSettings) -> tuple[str, ...]:
    """The route configurations Envoy reads with these settings (a plain HTTP listener
    that redirects to HTTPS reads none)."""
    if s.https is None:
        return ROUTE_NAMES
    if s.redirect_http_to_https:
        return ("preview", "https")
    return TLS_ROUTE_NAMES


def shadow_cluster_name(colour: Colour, group: str) -> str:
    """The cluster mirrored ``group`` requests go to: ``green-shadow-api`` …; the same
    instances as ``colour``, with statistics of their own."""
    return f"{colour}-shadow-{group}"


def shadow_cluster(
    colour: Colour, group: str, s: DataPlaneSettings, app: AppPaths, eds: str
) -> Json:
    """A mirror target: ``colour``'s endpoints (from the same file), with no health checks
    of its own (the colour's cluster checks those instances already)."""
    result = cluster(colour, s, app, eds)
    result["name"] = shadow_cluster_name(colour, group)
    result["eds_cluster_config"]["service_name"] = colour
    del result["health_checks"]
    return result


def cluster(colour: Colour, s: DataPlaneSettings, app: AppPaths, eds_path: str) -> Json:
    """The cluster of one colour; its endpoints come from ``eds_path``."""
    big = 100_000
    return {
        "@type": CLUSTER_TYPE,
        "name": colour,
        "type": "EDS",
        "eds_cluster_config": {"eds_config": path_source(eds_path)},
        "connect_timeout": seconds(1.0),
        "lb_policy": "LEAST_REQUEST",
        # The endpoint files are the truth: an instance taken out of them leaves at once,
        # even while it still passes its health check.
        "ignore_health_on_host_removal": True,
        "per_connection_buffer_limit_bytes": s.buffer_bytes,
        # A shared cause (the database restarting) fails every ready check at once: below
        # this share of healthy instances Envoy tries them all rather than answer 503.
        "common_lb_config": {"healthy_panic_threshold": {"value": s.panic_threshold}},
        "health_checks": [
            {
                "timeout": seconds(s.health_timeout),
                "interval": seconds(s.health_interval),
                "no_traffic_interval": seconds(s.health_interval),
                "unhealthy_threshold": s.unhealthy_threshold,
                "healthy_threshold": s.healthy_threshold,
                "reuse_connection": True,
                "http_health_check": {"path": app.ready_path},
            }
        ],
        "outlier_detection": {
            # A refused connect ejects the instance at once (it died, or restarts); the
            # request itself is retried elsewhere. Answers from the app count apart.
            "split_external_local_origin_errors": True,
            "consecutive_local_origin_failure": 1,
            "enforcing_consecutive_local_origin_failure": 100,
            "consecutive_5xx": s.outlier_consecutive_5xx,
            "interval": seconds(min(s.outlier_ejection_time, 5.0)),
            "base_ejection_time": seconds(s.outlier_ejection_time),
            "max_ejection_percent": s.outlier_max_percent,
        },
        "circuit_breakers": {
            "thresholds": [
                {
                    "max_connections": big,
                    "max_pending_requests": big,
                    "max_requests": big,
                    "max_retries": big,
                }
            ]
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": PROTOCOL_OPTIONS_TYPE,
                # Close pooled connections before the app's keep-alive does, so a request
                # is never written onto a connection the app is closing.
                "common_http_protocol_options": {"idle_timeout": seconds(s.upstream_idle_timeout)},
                "explicit_http_config": {"http_protocol_options": {}},
            }
        },
    }


def endpoints(colour: Colour, table: RoutingTable) -> Json:
    """The endpoints of one colour; a backend marked unhealthy is kept but not chosen."""
    lb: list[Json] = []
    for b in table.of_colour(colour):
        entry: Json = {
            "endpoint": {
                "address": {"socket_address": {"address": b.host, "port_value": b.port}},
                "hostname": b.id,
            }
        }
        if not b.healthy:  # left out when healthy, as Envoy's config dump leaves it out
            entry["health_status"] = "UNHEALTHY"
        lb.append(entry)
    return {
        "@type": ENDPOINTS_TYPE,
        "cluster_name": colour,
        "endpoints": [{"lb_endpoints": lb}] if lb else [],
    }


def routes(name: str, table: RoutingTable, s: DataPlaneSettings) -> Json:
    """The route configuration ``name``: ``public``, ``https`` (the public routes with a
    ``Secure`` stickiness cookie) or ``preview``."""
    public = name != "preview"
    colour = table.live if public else table.preview_colour()
    if table.mode == "paused":
        entries = _unavailable(
            "paused",
            "requests are paused, retry shortly",
            "Back in a moment",
            "We are switching to a new version. Please try again in a few seconds.",
            page_identity(table, s),
            s,
        )
    elif table.mode == "maintenance" and public:
        entries = _unavailable(
            "maintenance",
            "down for maintenance, retry later",
            "Down for maintenance",
            "We are updating the service. Please try again in a few minutes.",
            page_identity(table, s),
            s,
        )
    elif colour is None:
        entries = [_error_route(503, "nothing_live", "no version is deployed", s)]
    elif public:
        entries = public_routes(table, s, secure=name == "https")
    else:
        entries = forward_routes(colour, s)
    return {
        "@type": ROUTES_TYPE,
        "name": name,
        "virtual_hosts": [
            {
                "name": "public" if public else "preview",
                "domains": ["*"],
                "routes": [forged_shadow_host(s), *entries],
            }
        ],
    }


def public_routes(table: RoutingTable, s: DataPlaneSettings, *, secure: bool) -> list[Json]:
    """The live routes: one colour, or (phased switch) the colour a ``bg-colour`` cookie
    names, else a weighted pick whose answer sets that cookie."""
    shadow = table.shadow
    mirror = shadow.target if shadow is not None and shadow.share > 0 else None
    share = shadow.share if shadow is not None else 0.0
    split = table.split()
    if split is None:
        colour = table.public_colour() or table.live or "blue"  # routes(): something is live
        return forward_routes(colour, s, mirror=mirror, share=share)
    candidate, live, percent = split
    result: list[Json] = []
    for c in (candidate, live):
        cookie = {"name": "cookie", "string_match": {"safe_regex": {"regex": _cookie_regex(c)}}}
        result += forward_routes(c, s, mirror=mirror, share=share, extra=[cookie])
    weighted = {
        "weighted_clusters": {
            "clusters": [
                {
                    "name": c,
                    "weight": w,
                    "response_headers_to_add": [
                        {
                            "header": {"key": "set-cookie", "value": sticky_cookie(c, secure)},
                            "append_action": "APPEND_IF_EXISTS_OR_ADD",
                        }
                    ],
                }
                for c, w in ((candidate, percent), (live, 100 - percent))
            ]
        }
    }
    return result + forward_routes("split", s, mirror=mirror, share=share, target=weighted)


def sticky_cookie(colour: Colour, secure: bool) -> str:
    """The ``Set-Cookie`` value that keeps a browser on ``colour`` (a session cookie)."""
    return f"{COOKIE}={colour}; Path=/; HttpOnly; SameSite=Lax" + ("; Secure" if secure else "")


def _cookie_regex(colour: Colour) -> str:
    return f"(.*;\\s*)?{COOKIE}={colour}(\\s*;.*)?"


def forward_routes(
    colour: str,
    s: DataPlaneSettings,
    *,
    mirror: Colour | None = None,
    share: float = 0.0,
    extra: list[Json] | None = None,
    target: Json | None = None,
) -> list[Json]:
    """Per route group (API, static, pages): websockets (no timeout, no retry), then
    requests safe to repeat after a reset (idempotent methods, or an ``Idempotency-Key``),
    then the rest (retried only when the request never reached the app). Safe reads
    (GET, HEAD) are mirrored to ``mirror``'s shadow cluster when it is not ``colour``.

    ``colour`` names the statistics (``<colour>_<group>``); the requests go to
    ``target`` (a route action's destination), by default the cluster ``colour``.
    """
    dest = target if target is not None else {"cluster": colour}
    extra = extra or []
    upgrade = {"name": "upgrade", "string_match": {"exact": "websocket", "ignore_case": True}}
    reads = {"name": ":method", "string_match": {"safe_regex": {"regex": MIRRORED}}}
    method = {"name": ":method", "string_match": {"safe_regex": {"regex": IDEMPOTENT}}}
    keyed = {"name": "idempotency-key", "present_match": True}
    result: list[Json] = []
    for group, prefix in PREFIXES:
        stat = f"{colour}_{group}"

        def route(headers: list[Json], action: Json, *, p: str = prefix, st: str = stat) -> Json:
            return {
                "match": {"prefix": p, "headers": extra + headers},
                "route": action,
                "stat_prefix": st,
            }

        ws = {**dest, "timeout": "0s", "idle_timeout": seconds(s.websocket_idle_timeout)}
        result.append(route([upgrade], ws))
        if mirror is not None and mirror != colour:
            action = _action(dest, SAFE_RETRY_ON, s)
            action["request_mirror_policies"] = [
                {
                    "cluster": shadow_cluster_name(mirror, group),
                    "runtime_fraction": {
                        "default_value": {
                            "numerator": round(share * 1_000_000),
                            "denominator": "MILLION",
                        },
                        "runtime_key": "bluegreen.shadow_share",
                    },
                }
            ]
            result.append(route([reads], action))
        result.append(route([method], _action(dest, SAFE_RETRY_ON, s)))
        result.append(route([keyed], _action(dest, SAFE_RETRY_ON, s)))
        result.append(route([], _action(dest, UNSAFE_RETRY_ON, s)))
    return result


def _action(dest: Json, retry_on: str, s: DataPlaneSettings) -> Json:
    return {
        **dest,
        "timeout": seconds(s.request_timeout),
        "retry_policy": {
            "retry_on": retry_on,
            "num_retries": s.retries,
            "per_try_timeout": seconds(s.per_try_timeout),
            "retry_host_predicate": [
                {
                    "name": "envoy.retry_host_predicates.previous_hosts",
                    "typed_config": {
                        "@type": "type.googleapis.com/"
                        "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
                    },
                }
            ],
            # Least request favours an instance whose connects fail fast: re-pick harder.
            "host_selection_retry_max_attempts": 50,
        },
    }


SHADOW_HOST = r".*-[sS][hH][aA][dD][oO][wW](:[0-9]+)?"
"""A Host like the one Envoy gives a mirrored request (``-shadow`` appended to its name),
in any case: host names are case-insensitive."""


def forged_shadow_host(s: DataPlaneSettings) -> Json:
    """Refuses (400) a client's request whose Host looks like a mirrored one's: the app
    treats such a request as a side-effect-free shadow read (no audit row), so only Envoy's
    own mirror may send it. Mirrored requests go straight to a shadow cluster, past these
    routes."""
    forged = {"name": ":authority", "string_match": {"safe_regex": {"regex": SHADOW_HOST}}}
    return _error_route(
        400,
        "bad_host",
        "a Host ending in -shadow is reserved for mirrored requests",
        s,
        match={"prefix": "/", "headers": [forged]},
    )


def _error_route(
    status: int, error: str, detail: str, s: DataPlaneSettings, *, match: Json | None = None
) -> Json:
    body = json.dumps({"error": error, "detail": detail}) + "\n"
    return _direct(status, body, "application/json", s, match=match)


BROWSER = {"name": "accept", "string_match": {"contains": "text/html"}}
"""A browser asks for HTML; API clients (and ``/api/``) get JSON."""


def _unavailable(
    error: str, detail: str, title: str, message: str, who: Identity, s: DataPlaneSettings
) -> list[Json]:
    """503 with Retry-After: JSON under ``/api/`` and for API clients, the HTML page for a
    browser (``Accept: text/html``), never raw JSON to a person."""
    page = unavailable_page(title, message, who)
    return [
        _error_route(503, error, detail, s, match={"prefix": "/api/"}),
        _direct(
            503, page, "text/html; charset=utf-8", s, match={"prefix": "/", "headers": [BROWSER]}
        ),
        _error_route(503, error, detail, s),
    ]


def _direct(
    status: int, body: str, content_type: str, s: DataPlaneSettings, *, match: Json | None = None
) -> Json:
    headers = {"content-type": content_type, "cache-control": "no-store"}
    if status == 503:
        headers["retry-after"] = str(s.retry_after)
    return {
        "match": match or {"prefix": "/"},
        "direct_response": {"status": status, "body": {"inline_string": body}},
        "response_headers_to_add": [
            {"header": {"key": k, "value": v}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
            for k, v in headers.items()
        ],
    }


def tls_secret(name: str, cert: str, key: str, watched_dir: str) -> Json:
    """A certificate by file name; moving new files into ``watched_dir`` rotates it."""
    return {
        "@type": SECRET_TYPE,
        "name": name,
        "tls_certificate": {
            "certificate_chain": {"filename": cert},
            "private_key": {"filename": key},
            "watched_directory": {"path": watched_dir},
        },
    }


def all_clusters(s: DataPlaneSettings, app: AppPaths, eds: dict[Colour, str]) -> Json:
    """The CDS file: one cluster per colour, and one mirror target per colour and group."""
    shadows = [shadow_cluster(c, g, s, app, eds[c]) for c in COLOURS for g in GROUPS]
    return discovery([cluster(c, s, app, eds[c]) for c in COLOURS] + shadows)
