"""Parsing the data plane's tables of bluegreen.toml."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from bluegreen.dataplane.settings import DataPlaneSettings, HostPort, parse_settings
from bluegreen.errors import ConfigError


def parse(text: str, base: Path = Path("/srv/app")) -> DataPlaneSettings:
    return parse_settings(tomllib.loads(text), base_dir=base)


def test_defaults_serve_http_https_and_preview_on_loopback() -> None:
    s = parse("")
    assert s == DataPlaneSettings()
    assert s.public == HostPort("127.0.0.1", 8000)
    assert s.https == HostPort("127.0.0.1", 8443)
    assert s.admin == ""  # a unix socket in the state dir
    assert s.tls_cert is None


def test_every_table_is_read() -> None:
    s = parse(
        """
        [listen]
        public = "0.0.0.0:80"
        https = "[::]:443"
        preview = "127.0.0.1:9002"
        admin = "127.0.0.1:8001"   # bluegreen's own admin: not ours, ignored here
        envoy_admin = "127.0.0.1:9901"
        [tls]
        cert = "certs/site.crt"
        key = "certs/site.key"
        redirect_http = true
        [limits]
        max_header_kib = 32
        max_body_bytes = 1000
        header_timeout = 2.5
        max_connections = 50
        [proxy]
        trusted_hops = 1
        retries = 0
        panic_threshold = 0
        per_try_timeout = 5
        """
    )
    assert s.public == HostPort("0.0.0.0", 80)
    assert s.https == HostPort("::", 443)
    assert s.admin == "127.0.0.1:9901"
    assert s.tls_cert == Path("/srv/app/certs/site.crt")
    assert s.tls_key == Path("/srv/app/certs/site.key")
    assert s.redirect_http_to_https is True
    assert (s.max_header_kib, s.max_body_bytes, s.header_timeout) == (32, 1000, 2.5)
    assert (s.trusted_hops, s.retries, s.panic_threshold) == (1, 0, 0.0)


def test_https_can_be_turned_off_and_admin_can_be_a_socket() -> None:
    s = parse('[listen]\nhttps = ""\nenvoy_admin = "var/envoy-admin.sock"')
    assert s.https is None
    assert s.admin == "/srv/app/var/envoy-admin.sock"


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('[listen]\nenvoy_admin = "10.0.0.5:9901"', "listen.envoy_admin"),
        ('[listen]\npublic = "nope"', "listen.public"),
        ('[listen]\npublic = "127.0.0.1:8000"\npreview = "127.0.0.1:8000"', "listen.preview"),
        ('[tls]\ncert = "a.crt"', "tls.cert"),
        ("[tls]\nredirect_http = 1", "tls.redirect_http"),
        ('[listen]\nhttps = ""\n[tls]\nredirect_http = true', "tls.redirect_http"),
        ("[limits]\nmax_body_bytes = 0", "limits.max_body_bytes"),
        ("[limits]\nmax_header_kib = 9000", "limits.max_header_kib"),
        ('[limits]\nidle_timeout = "1m"', "limits.idle_timeout"),
        ("[limits]\nbody = 1", "limits.body"),
        ("[proxy]\npanic_threshold = 150", "proxy.panic_threshold"),
        ("[proxy]\nretries = -1", "proxy.retries"),
        ("[proxy]\nper_try_timeout = 120", "proxy.per_try_timeout"),
    ],
)
def test_bad_values_name_their_key(toml: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse(toml)
