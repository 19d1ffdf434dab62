from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bluegreen.config import Address, Config, load_config, parse_address
from bluegreen.errors import BluegreenError, ConfigError

FULL = """
[app]
name = "clinic"
command = "{python} -m clinic serve --host 127.0.0.1 --port {port}"
workdir = "."
live_path = "/healthz/live"
ready_path = "/healthz/ready"
version_path = "/version"
env = { CLINIC_MODE = "prod" }

[hooks]
migrate = "{python} -m clinic db upgrade"
smoke = "{python} -m clinic smoke --base-url {base_url}"

[replicas]
blue = 2
green = 3

[listen]
public = "127.0.0.1:8000"
preview = "127.0.0.1:8002"
admin = "[::1]:8001"

[timeouts]
start = 30
ready = 60.5
drain = 10
analysis_window = 30
scale_down_delay = 0
hook = 300

[analysis]
max_error_rate = 0.02
max_error_rate_ratio = 2.0
max_p95_ratio = 2.0
min_p95_ms = 50
min_requests = 20

[releases]
keep = 3
dir = "var/releases"

[state]
dir = "var"
"""

MINIMAL = """
[app]
name = "tiny"
command = "{python} tinyapp.py --port {port}"
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "bluegreen.toml"
    p.write_text(text)
    return p


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> Config:
    return load_config(write(tmp_path, text), environ=environ or {})


def error(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, environ)
    assert info.value.exit_code == 2
    assert isinstance(info.value, BluegreenError)
    return str(info.value)


def test_full_config_parses(tmp_path: Path) -> None:
    cfg = load(tmp_path, FULL, {"BLUEGREEN_ADMIN_TOKEN": "s3cret-token"})
    assert cfg.app.name == "clinic"
    assert cfg.app.env == {"CLINIC_MODE": "prod"}
    assert cfg.replicas.of("blue") == 2
    assert cfg.replicas.of("green") == 3
    assert cfg.listen.public == Address("127.0.0.1", 8000)
    assert cfg.listen.admin == Address("::1", 8001)
    assert str(cfg.listen.admin) == "[::1]:8001"
    assert cfg.timeouts.ready == 60.5
    assert cfg.timeouts.scale_down_delay == 0.0
    assert cfg.analysis.min_requests == 20
    assert cfg.releases.dir == (tmp_path / "var" / "releases").resolve()
    assert cfg.releases.envs_dir == (tmp_path / "var" / "envs").resolve()
    assert cfg.state.dir == (tmp_path / "var").resolve()
    assert cfg.admin_token == "s3cret-token"
    assert "s3cret" not in repr(cfg)
    assert cfg.hooks.smoke is not None
    assert cfg.hooks.smoke.render(
        python="/py", release="r", release_dir="/d", colour="green", base_url="http://x:1"
    ) == [
        "/py",
        "-m",
        "clinic",
        "smoke",
        "--base-url",
        "http://x:1",
    ]


def test_minimal_config_defaults(tmp_path: Path) -> None:
    cfg = load(tmp_path, MINIMAL)
    assert cfg.admin_token is None
    assert cfg.hooks.migrate is None and cfg.hooks.smoke is None
    assert cfg.replicas.blue == 1 and cfg.replicas.green == 1
    assert cfg.app.ready_path == "/healthz/ready"
    assert cfg.timeouts.ready == 60.0
    assert cfg.releases.keep == 3


def test_command_render_keeps_spaces_in_one_argument(tmp_path: Path) -> None:
    cfg = load(tmp_path, MINIMAL)
    argv = cfg.app.command.render(
        python="/opt/my python/bin/python", port=1234, release="r1", release_dir="/x", colour="blue"
    )
    assert argv == ["/opt/my python/bin/python", "tinyapp.py", "--port", "1234"]


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("[timeouts]\nready = -1", "timeouts.ready: must be a positive number of seconds, got -1"),
        ("[timeouts]\nstart = 0", "timeouts.start: must be a positive number of seconds, got 0"),
        ('[timeouts]\nhook = "5"', "timeouts.hook: must be a positive number of seconds"),
        ("[timeouts]\ndrain = -0.5", "timeouts.drain: must be a non-negative number of seconds"),
        ('[listen]\npublic = "8000"', "listen.public: expected HOST:PORT, got '8000'"),
        ('[listen]\npublic = "localhost:99999"', "listen.public: port must be 0..65535"),
        ("[listen]\npublic = 8000", 'listen.public: expected "HOST:PORT" as a string'),
        ("[replicas]\nblue = 0", "replicas.blue: must be an integer >= 1, got 0"),
        ("[replicas]\ngreen = true", "replicas.green: must be an integer >= 1"),
        ("[replicas]\nred = 1", "replicas.red: unknown key"),
        ("[timeouts]\nreadyy = 1", "timeouts.readyy: unknown key"),
        ("[extra]\nx = 1", "extra: unknown section"),
        ("[analysis]\nmax_error_rate = 2", "analysis.max_error_rate: a fraction between 0 and 1"),
        ("[releases]\nkeep = 0", "releases.keep: must be an integer >= 1, got 0"),
        ('[hooks]\nsmoke = "{python} smoke {bogus}"', "hooks.smoke: unknown placeholder {bogus}"),
        (
            '[hooks]\nmigrate = "{python} m --url {base_url}"',
            "hooks.migrate: unknown placeholder {base_url}",
        ),
        ('[hooks]\nmigrate = "run \'unclosed"', "hooks.migrate: cannot split into arguments"),
        ('[hooks]\nmigrate = "{python!r} x"', "hooks.migrate: placeholder {python} must not have"),
        ('[hooks]\nmigrate = "{python"', "hooks.migrate: bad placeholder syntax"),
    ],
)
def test_invalid_values_name_the_key(tmp_path: Path, snippet: str, expected: str) -> None:
    assert expected in error(tmp_path, MINIMAL + snippet + "\n")


def test_app_errors(tmp_path: Path) -> None:
    assert "[app]: required section" in error(tmp_path, "[state]\ndir = 'x'\n")
    assert "app.command: required" in error(tmp_path, '[app]\nname = "x"\n')
    assert "app.command: must contain {port}" in error(
        tmp_path, '[app]\nname = "x"\ncommand = "{python} -m x"\n'
    )
    assert "app.command: unknown placeholder {base_url}" in error(
        tmp_path, '[app]\nname = "x"\ncommand = "{python} {port} {base_url}"\n'
    )
    assert "app.workdir: must be a path inside the release dir" in error(
        tmp_path, MINIMAL + 'workdir = "../elsewhere"\n'
    )
    assert "app.ready_path: expected a URL path" in error(
        tmp_path, MINIMAL + 'ready_path = "healthz"\n'
    )
    assert "app.env.PORT: values must be strings" in error(
        tmp_path, MINIMAL + "env = { PORT = 1 }\n"
    )
    assert "app.env.BLUEGREEN_ADMIN_TOKEN" in error(
        tmp_path, MINIMAL + 'env = { BLUEGREEN_ADMIN_TOKEN = "x" }\n'
    )


def test_app_env_may_hold_other_tokens(tmp_path: Path) -> None:
    cfg = load(tmp_path, MINIMAL + 'env = { GITHUB_TOKEN = "abc" }\n')
    assert cfg.app.env["GITHUB_TOKEN"] == "abc"


@pytest.mark.parametrize(
    "snippet",
    ['[listen]\nadmin_token = "abc"', '[admin]\ntoken = "abc"', 'admin_token = "abc"\n'],
)
def test_admin_token_in_file_is_rejected(tmp_path: Path, snippet: str) -> None:
    text = snippet + "\n" + MINIMAL if not snippet.startswith("[") else MINIMAL + snippet + "\n"
    msg = error(tmp_path, text)
    assert "token" in msg and "BLUEGREEN_ADMIN_TOKEN" in msg


def test_blank_admin_token_in_environment_is_rejected(tmp_path: Path) -> None:
    assert "BLUEGREEN_ADMIN_TOKEN: is set but empty" in error(
        tmp_path, MINIMAL, {"BLUEGREEN_ADMIN_TOKEN": "  "}
    )


def test_duplicate_listen_ports_rejected_but_port_zero_allowed(tmp_path: Path) -> None:
    msg = error(
        tmp_path, MINIMAL + '[listen]\npublic = "127.0.0.1:9000"\nadmin = "127.0.0.1:9000"\n'
    )
    assert "listen.admin: 127.0.0.1:9000 is already used by listen.public" in msg
    cfg = load(
        tmp_path,
        MINIMAL
        + '[listen]\npublic = "127.0.0.1:0"\npreview = "127.0.0.1:0"\nadmin = "127.0.0.1:0"\n',
    )
    assert cfg.listen.public.port == cfg.listen.admin.port == 0


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    assert "invalid TOML" in error(tmp_path, "[app\n")
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.toml", environ={})


def test_with_overrides_revalidates(tmp_path: Path) -> None:
    cfg = load(tmp_path, FULL, {"BLUEGREEN_ADMIN_TOKEN": "tok"})
    new = cfg.with_overrides({"listen": {"public": "127.0.0.1:0"}, "timeouts": {"ready": 5}})
    assert new.listen.public == Address("127.0.0.1", 0)
    assert new.listen.preview == cfg.listen.preview
    assert new.timeouts.ready == 5.0
    assert new.admin_token == "tok"
    assert cfg.listen.public.port == 8000  # original untouched
    with pytest.raises(ConfigError, match=r"timeouts\.ready"):
        cfg.with_overrides({"timeouts": {"ready": -1}})


def test_with_ports_and_replace(tmp_path: Path) -> None:
    cfg = load(tmp_path, FULL)
    free = cfg.with_ports()
    assert (free.listen.public.port, free.listen.preview.port, free.listen.admin.port) == (0, 0, 0)
    assert free.listen.admin.host == "::1"
    bumped = dataclasses.replace(cfg, replicas=dataclasses.replace(cfg.replicas, blue=5))
    assert bumped.replicas.blue == 5
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.app.name = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:80", Address("127.0.0.1", 80)),
        ("[::1]:0", Address("::1", 0)),
        ("h:1", Address("h", 1)),
    ],
)
def test_parse_address(text: str, expected: Address) -> None:
    assert parse_address(text, "k") == expected


@pytest.mark.parametrize("text", ["8000", ":80", "host:", "::1:80", "[::1]80", "h:x"])
def test_parse_address_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="k: expected HOST:PORT"):
        parse_address(text, "k")
