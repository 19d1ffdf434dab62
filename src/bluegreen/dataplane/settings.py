"""Every knob of the data plane, parsed once from ``bluegreen.toml`` into frozen dataclasses.

Tables read (all keys optional, defaults shown by :class:`DataPlaneSettings`):

.. code-block:: toml

    [listen]                      # only these keys are read here; listen.admin is bluegreen's
    public = "127.0.0.1:8000"     # plain HTTP (redirects to HTTPS with tls.redirect_http)
    https = "127.0.0.1:8443"      # HTTPS; "" turns HTTPS off
    preview = "127.0.0.1:8002"
    envoy_admin = ""              # Envoy's admin: loopback HOST:PORT, or a unix socket path;
                                  # "" = a unix socket in the state dir

    [tls]
    cert = ""                     # PEM chain; "" = self-signed, generated under the state dir
    key = ""                      # PEM key (both or neither), in the same directory. To rotate,
                                  # move new files into place (mv, or certbot's symlink swap):
                                  # Envoy reloads on a rename there, not on writes in place
    redirect_http = false         # public HTTP answers 301 to the HTTPS listener

    [limits]
    max_header_kib = 60           # all request headers together; more -> 431
    max_headers = 100             # number of request headers; more -> 431
    max_body_bytes = 10485760     # request body; more -> 413 (streamed, never buffered)
    header_timeout = 10           # seconds to receive the request headers
    idle_timeout = 60             # seconds a client connection may sit idle
    request_timeout = 60          # seconds for a whole request (websockets exempt)
    websocket_idle_timeout = 3600 # seconds a websocket may go without a frame
    max_connections = 10000       # client connections over all listeners
    buffer_bytes = 1048576        # per-connection buffer (flow control); bounds memory of
                                  # websockets and large bodies. A websocket message cap is the
                                  # app's (Envoy does not parse frames): see envoy.py

    [proxy]
    trusted_hops = 0              # proxies in front whose X-Forwarded-For entries are trusted
    retries = 2                   # extra tries when safe (see routes.py)
    per_try_timeout = 30          # seconds per try
    health_interval = 1           # seconds between active checks of each instance
    health_timeout = 1
    unhealthy_threshold = 2
    healthy_threshold = 1
    outlier_consecutive_5xx = 5   # passive: eject an instance after this many 5xx in a row
    outlier_ejection_time = 10    # seconds, grows with each ejection
    outlier_max_percent = 50      # never eject more than this share of a colour
    panic_threshold = 50          # % healthy below which all instances get traffic
    upstream_idle_timeout = 4     # seconds; below the app's keep-alive (uvicorn: 5)
    retry_after = 5               # Retry-After of the data plane's own 503s
    workers = 0                   # Envoy worker threads; 0 = one per core
    drain_time = 10               # hot restart: seconds the old epoch drains

    [identity]                    # shown on the data plane's own pages (maintenance, pause),
    url = ""                      # which Envoy serves while every instance may be down: the
                                  # app's path answering who runs it (JSON), read from each
                                  # new release at its smoke step, e.g. "/api/v1/clinic";
    name = ""                     # else (or until a release answered) these values:
    contact = ""                  # e.g. "Tel. +49 30 1234567, info@clinic.example"
    emergency = ""                # e.g. "In an emergency call 112."
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from bluegreen.errors import ConfigError


@dataclass(frozen=True, slots=True)
class HostPort:
    """A listen address; ``port == 0`` means any free port."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class AppPaths:
    """The app's contract paths: Envoy health-checks ``ready_path``."""

    ready_path: str = "/healthz/ready"
    live_path: str = "/healthz/live"
    version_path: str = "/version"


@dataclass(frozen=True, slots=True)
class DataPlaneSettings:
    """Listeners, TLS, limits and balancing of the Envoy data plane."""

    public: HostPort = HostPort("127.0.0.1", 8000)
    https: HostPort | None = HostPort("127.0.0.1", 8443)
    preview: HostPort = HostPort("127.0.0.1", 8002)
    admin: str = ""  # "" = unix socket in the state dir
    # [tls]
    tls_cert: Path | None = None
    tls_key: Path | None = None
    redirect_http_to_https: bool = False
    # [limits]
    max_header_kib: int = 60
    max_headers: int = 100
    max_body_bytes: int = 10 * 1024 * 1024
    header_timeout: float = 10.0
    idle_timeout: float = 60.0
    request_timeout: float = 60.0
    websocket_idle_timeout: float = 3600.0
    max_connections: int = 10000
    buffer_bytes: int = 1024 * 1024
    # [proxy]
    trusted_hops: int = 0
    retries: int = 2
    per_try_timeout: float = 30.0
    health_interval: float = 1.0
    health_timeout: float = 1.0
    unhealthy_threshold: int = 2
    healthy_threshold: int = 1
    outlier_consecutive_5xx: int = 5
    outlier_ejection_time: float = 10.0
    outlier_max_percent: int = 50
    panic_threshold: float = 50.0
    upstream_idle_timeout: float = 4.0
    retry_after: int = 5
    workers: int = 0
    drain_time: float = 10.0
    identity_name: str = ""
    identity_contact: str = ""
    identity_emergency: str = ""
    identity_url: str = ""

    def with_ports(self, public: int = 0, https: int = 0, preview: int = 0) -> DataPlaneSettings:
        """Same settings on these ports (default: any free port); for tests and benches."""
        return replace(
            self,
            public=replace(self.public, port=public),
            https=None if self.https is None else replace(self.https, port=https),
            preview=replace(self.preview, port=preview),
        )


_LIMIT_INTS = ("max_header_kib", "max_headers", "max_body_bytes", "max_connections")
_LIMIT_INTS_2 = ("buffer_bytes",)
_LIMIT_SECONDS = ("header_timeout", "idle_timeout", "request_timeout", "websocket_idle_timeout")
_PROXY_INTS = (
    "retries",
    "unhealthy_threshold",
    "healthy_threshold",
    "outlier_consecutive_5xx",
    "retry_after",
)
_PROXY_SECONDS = (
    "per_try_timeout",
    "health_interval",
    "health_timeout",
    "outlier_ejection_time",
    "upstream_idle_timeout",
    "drain_time",
)


def parse_settings(raw: Mapping[str, Any], *, base_dir: Path) -> DataPlaneSettings:
    """Read ``[listen]``, ``[tls]``, ``[limits]``, ``[proxy]`` and ``[identity]`` of a parsed
    ``bluegreen.toml``; relative file paths are resolved against ``base_dir``.

    Raises :class:`ConfigError` naming the key on a bad value.
    """
    d = DataPlaneSettings()
    values: dict[str, Any] = {}
    listen = _table(raw, "listen")
    for key in ("public", "preview"):
        if key in listen:
            values[key] = parse_host_port(_str(listen, "listen", key), f"listen.{key}")
    if "https" in listen:
        text = _str(listen, "listen", "https")
        values["https"] = parse_host_port(text, "listen.https") if text else None
    if "envoy_admin" in listen:
        values["admin"] = _admin(_str(listen, "listen", "envoy_admin"), base_dir)
    values.update(_parse_tls(_table(raw, "tls"), base_dir))

    limits = _table(raw, "limits")
    _only(limits, "limits", {*_LIMIT_INTS, *_LIMIT_INTS_2, *_LIMIT_SECONDS})
    for key in (*_LIMIT_INTS, *_LIMIT_INTS_2):
        if key in limits:
            values[key] = _int(limits, "limits", key, minimum=1)
    if values.get("max_header_kib", d.max_header_kib) > 8192:
        raise ConfigError("limits.max_header_kib: at most 8192")
    for key in _LIMIT_SECONDS:
        if key in limits:
            values[key] = _seconds(limits, "limits", key)

    proxy = _table(raw, "proxy")
    _only(
        proxy,
        "proxy",
        {*_PROXY_INTS, *_PROXY_SECONDS, "trusted_hops", "outlier_max_percent"}
        | {"panic_threshold", "workers"},
    )
    for key in _PROXY_INTS:
        if key in proxy:
            values[key] = _int(proxy, "proxy", key, minimum=1 if key != "retries" else 0)
    for key in ("trusted_hops", "workers"):
        if key in proxy:
            values[key] = _int(proxy, "proxy", key, minimum=0)
    if "outlier_max_percent" in proxy:
        values["outlier_max_percent"] = _int(proxy, "proxy", "outlier_max_percent", minimum=0)
        if values["outlier_max_percent"] > 100:
            raise ConfigError("proxy.outlier_max_percent: must be 0..100")
    if "panic_threshold" in proxy:
        value = _number(proxy, "proxy", "panic_threshold")
        if not 0 <= value <= 100:
            raise ConfigError("proxy.panic_threshold: must be 0..100 (percent)")
        values["panic_threshold"] = value
    for key in _PROXY_SECONDS:
        if key in proxy:
            values[key] = _seconds(proxy, "proxy", key)
    values.update(_parse_identity(_table(raw, "identity")))
    settings = replace(d, **values)
    _check_addresses(settings)
    return settings


IDENTITY_MAX = 500
"""Characters per ``[identity]`` value (they are inlined in Envoy's route files)."""


def _parse_identity(sec: Mapping[str, Any]) -> dict[str, str]:
    _only(sec, "identity", {"name", "contact", "emergency", "url"})
    values: dict[str, str] = {}
    if "url" in sec:
        url = _str(sec, "identity", "url").strip()
        if url and (
            not url.startswith("/")
            or url.startswith("//")
            or any(c.isspace() or ord(c) < 32 for c in url)
        ):
            raise ConfigError(
                f"identity.url: a path on the app such as /api/v1/clinic, not {url!r}"
            )
        values["identity_url"] = url
    for key in ("name", "contact", "emergency"):
        if key in sec:
            text = _str(sec, "identity", key).strip()
            if len(text) > IDENTITY_MAX:
                raise ConfigError(f"identity.{key}: at most {IDENTITY_MAX} characters")
            values[f"identity_{key}"] = text
    return values


def _parse_tls(tls: Mapping[str, Any], base_dir: Path) -> dict[str, Any]:
    _only(tls, "tls", {"cert", "key", "redirect_http"})
    values: dict[str, Any] = {}
    cert = _str(tls, "tls", "cert") if "cert" in tls else ""
    key = _str(tls, "tls", "key") if "key" in tls else ""
    if bool(cert) != bool(key):
        raise ConfigError("tls.cert and tls.key: set both (your own certificate) or neither")
    if cert:
        values["tls_cert"] = (base_dir / cert).resolve()
        values["tls_key"] = (base_dir / key).resolve()
    if "redirect_http" in tls:
        flag = tls["redirect_http"]
        if not isinstance(flag, bool):
            raise ConfigError("tls.redirect_http: expected true or false")
        values["redirect_http_to_https"] = flag
    return values


def parse_host_port(text: str, key: str) -> HostPort:
    """``HOST:PORT`` or ``[IPV6]:PORT``."""
    bad = ConfigError(f"{key}: expected HOST:PORT, got {text!r}")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise bad
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or ":" in host:
            raise bad
    if not host or not port_text.isdigit() or int(port_text) > 65535:
        raise bad
    return HostPort(host, int(port_text))


def _admin(text: str, base_dir: Path) -> str:
    """Envoy's admin must never be reachable from outside: loopback or a unix socket."""
    if not text:
        return ""
    if text.startswith(("/", "./", "../")) or text.endswith(".sock"):
        return str((base_dir / text).resolve())
    addr = parse_host_port(text, "listen.envoy_admin")
    try:
        loopback = ipaddress.ip_address(addr.host).is_loopback
    except ValueError:
        loopback = addr.host == "localhost"
    if not loopback:
        raise ConfigError(
            f"listen.envoy_admin: {text} is not loopback; use 127.0.0.1:PORT or a socket path"
        )
    return str(addr)


def _check_addresses(s: DataPlaneSettings) -> None:
    seen: dict[tuple[str, int], str] = {}
    for name in ("public", "https", "preview"):
        addr = getattr(s, name)
        if addr is None or addr.port == 0:
            continue
        other = seen.get((addr.host, addr.port))
        if other is not None:
            raise ConfigError(f"listen.{name}: {addr} is already used by listen.{other}")
        seen[(addr.host, addr.port)] = name
    if s.redirect_http_to_https and s.https is None:
        raise ConfigError("tls.redirect_http: needs listen.https")
    if s.per_try_timeout > s.request_timeout:
        raise ConfigError("proxy.per_try_timeout: must not exceed limits.request_timeout")


def _table(raw: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    sec = raw.get(name, {})
    if not isinstance(sec, Mapping):
        raise ConfigError(f"[{name}]: expected a table")
    return sec


def _only(sec: Mapping[str, Any], name: str, allowed: set[str]) -> None:
    unknown = sorted(set(sec) - allowed)
    if unknown:
        raise ConfigError(f"{name}.{unknown[0]}: unknown key (known: {', '.join(sorted(allowed))})")


def _str(sec: Mapping[str, Any], name: str, key: str) -> str:
    value = sec[key]
    if not isinstance(value, str):
        raise ConfigError(f"{name}.{key}: expected a string, got {type(value).__name__}")
    return value


def _number(sec: Mapping[str, Any], name: str, key: str) -> float:
    value = sec[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{name}.{key}: expected a number, got {value!r}")
    return float(value)


def _seconds(sec: Mapping[str, Any], name: str, key: str) -> float:
    value = _number(sec, name, key)
    if value <= 0:
        raise ConfigError(f"{name}.{key}: must be > 0 seconds, got {value}")
    return value


def _int(sec: Mapping[str, Any], name: str, key: str, *, minimum: int) -> int:
    value = sec[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name}.{key}: expected an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{name}.{key}: must be >= {minimum}, got {value}")
    return value


SETTING_NAMES: tuple[str, ...] = tuple(f.name for f in fields(DataPlaneSettings))
