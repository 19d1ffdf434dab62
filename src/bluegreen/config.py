"""``bluegreen.toml``: what to deploy and how, parsed once into frozen dataclasses.

Every key below is optional unless marked *required*; the default is shown.
Unknown sections and keys are rejected by name. Relative directories are
resolved against the directory holding ``bluegreen.toml``.

.. code-block:: toml

    [app]
    name = "clinic"                       # required: shown in logs and the admin API
    command = "{python} -m clinic serve --host 127.0.0.1 --port {port}"   # required
    workdir = "."                         # instance cwd, relative to the release dir
    live_path = "/healthz/live"           # liveness probe path
    ready_path = "/healthz/ready"         # readiness probe path (gates traffic)
    version_path = "/version"             # reports the running release
    env = {}                              # extra env (string values) for instances and hooks

    [hooks]                               # both optional; run from the release dir
    migrate = "{python} -m clinic db upgrade"
    smoke = "{python} -m clinic smoke --base-url {base_url}"

    [replicas]                            # instances per colour, each >= 1
    blue = 1
    green = 1

    [listen]                              # HOST:PORT ("[::1]:8000" for IPv6); port 0 = any
    public = "127.0.0.1:8000"             # Envoy: plain HTTP
    https = "127.0.0.1:8443"              # Envoy: HTTPS ("" = off)
    preview = "127.0.0.1:8002"            # Envoy: the candidate colour before the switch
    admin = "127.0.0.1:8001"              # bluegreen's admin API and dashboard
    envoy_admin = ""                      # Envoy's own admin: loopback or a socket path

    [tls] [limits] [proxy]                # the data plane's TLS, limits and balancing:
    [identity]                            # and who runs the app, for its maintenance and
                                          # pause pages: see bluegreen.dataplane.settings

    [timeouts]                            # seconds (int or float)
    start = 30                            # > 0: process start to first answer
    ready = 60                            # > 0: start to ready
    drain = 10                            # >= 0: in-flight requests after a switch
    analysis_window = 30                  # >= 0: post-switch analysis (0 = skip)
    scale_down_delay = 300                # >= 0: old colour kept warm for rollback
    hook = 300                            # > 0: per hook run

    [analysis]
    max_error_rate = 0.02                 # 0..1: candidate 5xx rate allowed (absolute)
    max_error_rate_ratio = 2.0            # > 0: ... and relative to the baseline rate
    max_p95_ratio = 2.0                   # > 0: candidate p95 vs baseline p95
    min_p95_ms = 50                       # >= 0: p95 differences below this never breach
    min_requests = 20                     # >= 0: fewer requests = inconclusive (passes)

    [switch]                              # how the switch moves users to the new colour
    steps = [100]                         # whole percents of NEW sessions on the new colour,
                                          # strictly increasing, each 1..100, ending at 100;
                                          # [100] = atomic; e.g. [10, 50, 100] = phased
    step_window = 30                      # > 0 seconds: each phase below 100 % is analysed
                                          # (new colour against the live one) this long

    [releases]
    keep = 3                              # >= 1 release dirs kept (plus live and previous)
    dir = "var/releases"                  # venvs live beside it, in <dir>/../envs

    [state]
    dir = "var"                           # bluegreen's own, mode 0700: SQLite state, admin
                                          # token, logs, Envoy's files; never given to the app
    app_dir = "<dir>/app"                 # the app's own directory (secrets, data), given
                                          # to instances and hooks under dir_env; must not
                                          # hold dir, so they never see the token or state
    dir_env = ""                          # if set: env var given the absolute app_dir
                                          # (e.g. "CLINIC_VAR_DIR"), for instances and hooks

    [database]                            # optional: one database shared by every release
    url_command = "{python} -m clinic db url --keep-running"   # required in the section:
                                          # run once at daemon start, prints the URL on stdout
    env = "CLINIC_DATABASE_URL"           # required in the section: env var given that URL
    stop_command = "{python} -m clinic db stop"   # optional: run when the daemon stops

    [migrations]                          # optional: schema changes checked before a deploy
    plan = "{python} -m clinic db plan --json"   # required in the section: prints the
                                          # release's migration plan (bluegreen.migrations)
    downgrade = "{python} -m clinic db downgrade {revision}"   # undoes a failed migration
    scratch_create = "{python} -m clinic db scratch create"    # prints a scratch DB URL
    scratch_drop = "{python} -m clinic db scratch drop {url}"  # with the live schema
    squawk_config = ".squawk.toml"        # squawk settings, relative to the release dir

With ``[migrations]`` and ``[database]`` set, a deploy also lints the release's
migrations (``lint`` step), rehearses them on a scratch copy of the live schema with
the live release (``rehearse``) and re-checks the live colour after migrating
(``verify``); see docs/migrations.md.

Command templates are split like a shell would (``shlex``) but never run by a
shell; placeholders are substituted per argument, so values with spaces stay
one argument. Placeholders: ``{python}`` (the release's venv python),
``{release}`` (release id), ``{release_dir}``, ``{colour}``; the app command
also has ``{port}``, the smoke hook ``{base_url}`` (the preview listener URL); the
database commands have ``{python}``, ``{release}`` and ``{release_dir}`` only.
Write ``{{`` / ``}}`` for literal braces.

The admin token is never read from the file: it comes from the
``BLUEGREEN_ADMIN_TOKEN`` environment variable, and a file containing a token
key is rejected.
"""

from __future__ import annotations

import itertools
import math
import re
import shlex
import string
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from bluegreen.dataplane.settings import AppPaths, DataPlaneSettings, parse_settings
from bluegreen.errors import ConfigError

Colour = Literal["blue", "green"]
COLOURS: tuple[Colour, ...] = ("blue", "green")

ADMIN_TOKEN_ENV = "BLUEGREEN_ADMIN_TOKEN"  # noqa: S105 (a variable name, not a secret)

COMMON_PLACEHOLDERS: frozenset[str] = frozenset({"python", "release", "release_dir", "colour"})
COMMAND_PLACEHOLDERS: frozenset[str] = COMMON_PLACEHOLDERS | {"port"}
MIGRATE_PLACEHOLDERS: frozenset[str] = COMMON_PLACEHOLDERS
SMOKE_PLACEHOLDERS: frozenset[str] = COMMON_PLACEHOLDERS | {"base_url"}
DATABASE_PLACEHOLDERS: frozenset[str] = frozenset({"python", "release", "release_dir"})
PLAN_PLACEHOLDERS: frozenset[str] = COMMON_PLACEHOLDERS
DOWNGRADE_PLACEHOLDERS: frozenset[str] = COMMON_PLACEHOLDERS | {"revision"}
SCRATCH_DROP_PLACEHOLDERS: frozenset[str] = COMMON_PLACEHOLDERS | {"url"}

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def http_url(host: str, port: int, scheme: str = "http") -> str:
    """``scheme://host:port``, an IPv6 host in brackets: the one place URLs are formatted."""
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"


@dataclass(frozen=True, slots=True)
class Address:
    """A listen address; ``port == 0`` means "any free port"."""

    host: str
    port: int

    def __str__(self) -> str:
        return http_url(self.host, self.port).removeprefix("http://")

    @property
    def url(self) -> str:
        """``http://host:port`` (only meaningful once the port is known)."""
        return http_url(self.host, self.port)


@dataclass(frozen=True, slots=True)
class Template:
    """A validated command template; :meth:`render` gives the argv."""

    source: str
    placeholders: frozenset[str]

    def render(self, **values: object) -> list[str]:
        """Substitute placeholders per argument (``KeyError`` if a used one is not given)."""
        return [arg.format_map(values) for arg in shlex.split(self.source)]

    def uses(self, placeholder: str) -> bool:
        """Whether the template mentions ``{placeholder}``."""
        return placeholder in _placeholders_in(self.source)


@dataclass(frozen=True, slots=True)
class AppConfig:
    """``[app]``."""

    name: str
    command: Template
    workdir: str = "."
    live_path: str = "/healthz/live"
    ready_path: str = "/healthz/ready"
    version_path: str = "/version"
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def paths(self) -> AppPaths:
        """The contract paths, as the data plane takes them."""
        return AppPaths(
            ready_path=self.ready_path, live_path=self.live_path, version_path=self.version_path
        )


@dataclass(frozen=True, slots=True)
class HooksConfig:
    """``[hooks]``: ``None`` means the hook is not configured."""

    migrate: Template | None = None
    smoke: Template | None = None


@dataclass(frozen=True, slots=True)
class ReplicasConfig:
    """``[replicas]``: instance count per colour."""

    blue: int = 1
    green: int = 1

    def of(self, colour: Colour) -> int:
        """Replica count for ``colour``."""
        return self.blue if colour == "blue" else self.green


@dataclass(frozen=True, slots=True)
class ListenConfig:
    """``[listen]``."""

    public: Address = Address("127.0.0.1", 8000)
    preview: Address = Address("127.0.0.1", 8002)
    admin: Address = Address("127.0.0.1", 8001)


@dataclass(frozen=True, slots=True)
class TimeoutsConfig:
    """``[timeouts]``, all in seconds."""

    start: float = 30.0
    ready: float = 60.0
    drain: float = 10.0
    analysis_window: float = 30.0
    scale_down_delay: float = 300.0
    hook: float = 300.0


@dataclass(frozen=True, slots=True)
class AnalysisConfig:
    """``[analysis]``: thresholds of the post-switch analysis."""

    max_error_rate: float = 0.02
    max_error_rate_ratio: float = 2.0
    max_p95_ratio: float = 2.0
    min_p95_ms: float = 50.0
    min_requests: int = 20
    confidence_z: float = 3.0
    """How sure an early error-rate breach must be (standard errors; 3 = about 99.87 %)."""
    failure_limit: int = 3
    """Consecutive looks with a latency breach that end the analysis early."""
    check_interval: float = 0.5
    """Seconds between looks at the new colour while the window runs."""


@dataclass(frozen=True, slots=True)
class ShadowConfig:
    """``[shadow]``: before the switch, mirror ``share`` of live reads to the candidate for
    ``duration`` seconds and compare its answers with the live colour's (0 = off)."""

    share: float = 0.0
    duration: float = 30.0
    min_requests: int = 50
    """Fewer mirrored requests than this never pass: synthetic reads top them up."""
    max_error_rate: float = 0.01
    max_p95_ratio: float = 1.5
    min_p95_ms: float = 50.0
    synthetic_paths: tuple[str, ...] = ()
    """Anonymous GETs sent through the public listener (so both colours answer the same
    requests) when live traffic is too thin to decide."""


@dataclass(frozen=True, slots=True)
class SwitchConfig:
    """``[switch]``: the share of new sessions on the new colour at each phase (``steps``,
    whole percents ending at 100) and how long each phase below 100 % is analysed."""

    steps: tuple[int, ...] = (100,)
    step_window: float = 30.0

    @property
    def phased(self) -> bool:
        """Whether the switch goes in phases (anything but the atomic ``[100]``)."""
        return self.steps != (100,)

    @property
    def phases(self) -> tuple[int, ...]:
        """The percents before the last step (100 %)."""
        return self.steps[:-1]


@dataclass(frozen=True, slots=True)
class ReleasesConfig:
    """``[releases]``; ``dir`` is absolute."""

    dir: Path
    keep: int = 3

    @property
    def envs_dir(self) -> Path:
        """Where shared dependency venvs live: ``<dir>/../envs``."""
        return self.dir.parent / "envs"


@dataclass(frozen=True, slots=True)
class StateConfig:
    """``[state]``; ``dir`` is absolute."""

    dir: Path
    dir_env: str | None = None
    app_dir: Path | None = None
    """What ``dir_env`` names; ``None``: ``<dir>/app``."""

    @property
    def app(self) -> Path:
        """The app's directory (outside :attr:`dir`'s private files)."""
        return self.app_dir if self.app_dir is not None else self.dir / "app"

    @property
    def db_path(self) -> Path:
        """The SQLite database file."""
        return self.dir / "bluegreen.sqlite3"

    @property
    def logs_dir(self) -> Path:
        """Per-instance log files."""
        return self.dir / "logs"


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    """``[database]``: a database that outlives every release and colour."""

    url_command: Template
    env: str
    stop_command: Template | None = None


@dataclass(frozen=True, slots=True)
class MigrationsConfig:
    """``[migrations]``: how to ask the app about its migrations (see docs/migrations.md)."""

    plan: Template
    downgrade: Template | None = None
    scratch_create: Template | None = None
    scratch_drop: Template | None = None
    squawk_config: str = ".squawk.toml"


@dataclass(frozen=True, slots=True)
class Config:
    """The whole validated configuration.

    Frozen: derive variants with :meth:`with_overrides` (re-validated) or
    :func:`dataclasses.replace`.
    """

    path: Path
    root: Path
    app: AppConfig
    hooks: HooksConfig
    replicas: ReplicasConfig
    listen: ListenConfig
    timeouts: TimeoutsConfig
    analysis: AnalysisConfig
    releases: ReleasesConfig
    state: StateConfig
    database: DatabaseConfig | None = None
    migrations: MigrationsConfig | None = None
    dataplane: DataPlaneSettings = field(default_factory=DataPlaneSettings)
    shadow: ShadowConfig = field(default_factory=ShadowConfig)
    switch: SwitchConfig = field(default_factory=SwitchConfig)
    admin_token: str | None = field(default=None, repr=False)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def with_overrides(self, overrides: Mapping[str, Mapping[str, Any]]) -> Config:
        """A new config with TOML-shaped ``{section: {key: value}}`` merged in, re-validated.

        Example: ``cfg.with_overrides({"listen": {"public": "127.0.0.1:0"}})``.
        """
        data: dict[str, Any] = {
            k: dict(v) if isinstance(v, Mapping) else v for k, v in self.raw.items()
        }
        for section, values in overrides.items():
            merged = dict(data.get(section) or {})
            merged.update(values)
            data[section] = merged
        return parse_config(
            data,
            path=self.path,
            root=self.root,
            environ={ADMIN_TOKEN_ENV: self.admin_token} if self.admin_token is not None else {},
        )

    def with_ports(
        self, *, public: int = 0, preview: int = 0, admin: int = 0, https: int = 0
    ) -> Config:
        """Same config listening on these ports (default 0 = any free port)."""
        return replace(
            self,
            listen=ListenConfig(
                public=replace(self.listen.public, port=public),
                preview=replace(self.listen.preview, port=preview),
                admin=replace(self.listen.admin, port=admin),
            ),
            dataplane=self.dataplane.with_ports(public=public, https=https, preview=preview),
        )


# --------------------------------------------------------------------------- loading


def load_config(path: Path, *, environ: Mapping[str, str]) -> Config:
    """Read and validate ``path``; the admin token comes from ``environ``.

    Raises :class:`ConfigError` naming the offending key and what is expected.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file; create it or pass --config") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    path = path.resolve()
    return parse_config(data, path=path, root=path.parent, environ=environ)


def parse_config(
    data: Mapping[str, Any], *, path: Path, root: Path, environ: Mapping[str, str]
) -> Config:
    """Validate already-parsed TOML data (``root`` anchors relative directories)."""
    _reject_tokens(data, "")
    _only_keys(
        data,
        "",
        {
            "app",
            "hooks",
            "replicas",
            "listen",
            "timeouts",
            "analysis",
            "shadow",
            "switch",
            "releases",
            "state",
            "database",
            "migrations",
            "tls",
            "limits",
            "proxy",
            "identity",
        },
    )
    app = _parse_app(_section(data, "app", required=True))
    hooks = _parse_hooks(_section(data, "hooks"))
    replicas = _parse_replicas(_section(data, "replicas"))
    listen = _parse_listen(_section(data, "listen"))
    timeouts = _parse_timeouts(_section(data, "timeouts"))
    analysis = _parse_analysis(_section(data, "analysis"))
    releases_sec = _section(data, "releases")
    _only_keys(releases_sec, "releases", {"keep", "dir"})
    releases = ReleasesConfig(
        dir=_directory(releases_sec, "releases", "dir", "var/releases", root),
        keep=_integer(releases_sec, "releases", "keep", 3, minimum=1),
    )
    state_sec = _section(data, "state")
    _only_keys(state_sec, "state", {"dir", "dir_env", "app_dir"})
    state = StateConfig(
        dir=_directory(state_sec, "state", "dir", "var", root),
        dir_env=_env_name(state_sec, "state", "dir_env", required=False),
        app_dir=(
            _directory(state_sec, "state", "app_dir", "", root) if "app_dir" in state_sec else None
        ),
    )
    if state.dir.is_relative_to(state.app):
        raise ConfigError(
            f"state.app_dir: {state.app} holds state.dir ({state.dir}), so every instance "
            "could read the admin token and the state database; give them separate "
            'directories (e.g. dir = ".bluegreen", app_dir = "var")'
        )
    database = _parse_database(data["database"]) if "database" in data else None
    migrations = _parse_migrations(data["migrations"]) if "migrations" in data else None
    if migrations is not None and migrations.scratch_create is not None and database is None:
        raise ConfigError(
            "migrations.scratch_create: needs a [database] section (its env names the "
            "variable that points an instance at the scratch database)"
        )
    return Config(
        path=path,
        root=root,
        app=app,
        hooks=hooks,
        replicas=replicas,
        listen=listen,
        timeouts=timeouts,
        analysis=analysis,
        releases=releases,
        state=state,
        database=database,
        migrations=migrations,
        dataplane=parse_settings(data, base_dir=root),
        shadow=_parse_shadow(_section(data, "shadow")),
        switch=_parse_switch(_section(data, "switch")),
        admin_token=_admin_token(environ),
        raw=MappingProxyType(
            {k: dict(v) if isinstance(v, Mapping) else v for k, v in data.items()}
        ),
    )


def parse_address(text: str, key: str) -> Address:
    """``HOST:PORT`` or ``[IPV6]:PORT`` into an :class:`Address`."""
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
    if not host or not port_text.isdigit():
        raise bad
    port = int(port_text)
    if port > 65535:
        raise ConfigError(f"{key}: port must be 0..65535, got {port}")
    return Address(host, port)


# --------------------------------------------------------------------------- sections


def _parse_app(sec: Mapping[str, Any]) -> AppConfig:
    _only_keys(
        sec,
        "app",
        {"name", "command", "workdir", "live_path", "ready_path", "version_path", "env"},
    )
    if "name" not in sec:
        raise ConfigError('app.name: required, e.g. name = "myapp"')
    if "command" not in sec:
        raise ConfigError('app.command: required, e.g. command = "{python} -m myapp --port {port}"')
    name = _string(sec, "app", "name", "")
    if not name.strip():
        raise ConfigError("app.name: must not be empty")
    command = _template(sec, "app", "command", COMMAND_PLACEHOLDERS)
    if "port" not in _placeholders_in(command.source):
        raise ConfigError(
            "app.command: must contain {port} so each instance listens on its own port"
        )
    workdir = _string(sec, "app", "workdir", ".")
    wd = Path(workdir)
    if wd.is_absolute() or ".." in wd.parts:
        raise ConfigError(
            f"app.workdir: must be a path inside the release dir (relative, no '..'), "
            f"got {workdir!r}"
        )
    paths = {k: _url_path(sec, k, default) for k, default in _PATH_DEFAULTS.items()}
    env_raw = sec.get("env", {})
    if not isinstance(env_raw, Mapping):
        raise ConfigError(f"app.env: expected a table of strings, got {_tname(env_raw)}")
    env: dict[str, str] = {}
    for k, v in env_raw.items():
        if not _ENV_NAME.match(k):
            raise ConfigError(f"app.env.{k}: not a valid environment variable name")
        if not isinstance(v, str):
            raise ConfigError(
                f'app.env.{k}: values must be strings, got {_tname(v)}; quote it: {k} = "{v}"'
            )
        if k == ADMIN_TOKEN_ENV:
            raise ConfigError(
                f"app.env.{k}: the admin token must not be passed to the app or kept in the file"
            )
        env[k] = v
    return AppConfig(
        name=name,
        command=command,
        workdir=workdir,
        live_path=paths["live_path"],
        ready_path=paths["ready_path"],
        version_path=paths["version_path"],
        env=MappingProxyType(env),
    )


_PATH_DEFAULTS = {
    "live_path": "/healthz/live",
    "ready_path": "/healthz/ready",
    "version_path": "/version",
}


def _parse_hooks(sec: Mapping[str, Any]) -> HooksConfig:
    _only_keys(sec, "hooks", {"migrate", "smoke"})
    migrate = _template(sec, "hooks", "migrate", MIGRATE_PLACEHOLDERS) if "migrate" in sec else None
    smoke = _template(sec, "hooks", "smoke", SMOKE_PLACEHOLDERS) if "smoke" in sec else None
    return HooksConfig(migrate=migrate, smoke=smoke)


def _parse_database(raw: object) -> DatabaseConfig:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"database: expected a [database] table, got {_tname(raw)}")
    _only_keys(raw, "database", {"url_command", "env", "stop_command"})
    if "url_command" not in raw:
        raise ConfigError(
            'database.url_command: required, e.g. url_command = "{python} -m myapp db url"'
        )
    env = _env_name(raw, "database", "env", required=True)
    assert env is not None
    return DatabaseConfig(
        url_command=_template(raw, "database", "url_command", DATABASE_PLACEHOLDERS),
        env=env,
        stop_command=(
            _template(raw, "database", "stop_command", DATABASE_PLACEHOLDERS)
            if "stop_command" in raw
            else None
        ),
    )


def _parse_migrations(raw: object) -> MigrationsConfig:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"migrations: expected a [migrations] table, got {_tname(raw)}")
    from bluegreen import dataguard  # its keys: the rehearsal's data check (sample_seed)

    keys = {"plan", "downgrade", "scratch_create", "scratch_drop", "squawk_config"}
    _only_keys(raw, "migrations", keys | dataguard.KEYS)
    dataguard.parse_settings(raw)  # validated now; the rehearsal reads it from Config.raw
    if "plan" not in raw:
        raise ConfigError(
            'migrations.plan: required, e.g. plan = "{python} -m myapp db plan --json"'
        )
    if ("scratch_create" in raw) != ("scratch_drop" in raw):
        raise ConfigError("migrations.scratch_create and migrations.scratch_drop go together")

    def optional(key: str, allowed: frozenset[str]) -> Template | None:
        return _template(raw, "migrations", key, allowed) if key in raw else None

    return MigrationsConfig(
        plan=_template(raw, "migrations", "plan", PLAN_PLACEHOLDERS),
        downgrade=optional("downgrade", DOWNGRADE_PLACEHOLDERS),
        scratch_create=optional("scratch_create", PLAN_PLACEHOLDERS),
        scratch_drop=optional("scratch_drop", SCRATCH_DROP_PLACEHOLDERS),
        squawk_config=_string(raw, "migrations", "squawk_config", ".squawk.toml"),
    )


def _env_name(sec: Mapping[str, Any], name: str, key: str, *, required: bool) -> str | None:
    if key not in sec:
        if required:
            raise ConfigError(f'{name}.{key}: required, e.g. {key} = "MYAPP_DATABASE_URL"')
        return None
    value = _string(sec, name, key, "")
    if not value and not required:
        return None
    if not _ENV_NAME.match(value):
        raise ConfigError(f"{name}.{key}: not a valid environment variable name: {value!r}")
    if value == ADMIN_TOKEN_ENV:
        raise ConfigError(f"{name}.{key}: must not be {ADMIN_TOKEN_ENV}")
    return value


def _parse_replicas(sec: Mapping[str, Any]) -> ReplicasConfig:
    _only_keys(sec, "replicas", set(COLOURS))
    return ReplicasConfig(
        blue=_integer(sec, "replicas", "blue", 1, minimum=1),
        green=_integer(sec, "replicas", "green", 1, minimum=1),
    )


def _parse_listen(sec: Mapping[str, Any]) -> ListenConfig:
    # https and envoy_admin are the data plane's (bluegreen.dataplane.settings)
    _only_keys(sec, "listen", {"public", "preview", "admin", "https", "envoy_admin"})
    defaults = ListenConfig()
    addrs: dict[str, Address] = {}
    for key in ("public", "preview", "admin"):
        if key in sec:
            value = sec[key]
            if not isinstance(value, str):
                raise ConfigError(
                    f'listen.{key}: expected "HOST:PORT" as a string, got {_tname(value)}'
                )
            addrs[key] = parse_address(value, f"listen.{key}")
        else:
            addrs[key] = getattr(defaults, key)
    seen: dict[tuple[str, int], str] = {}
    for key, addr in addrs.items():
        if addr.port == 0:
            continue
        other = seen.get((addr.host, addr.port))
        if other is not None:
            raise ConfigError(f"listen.{key}: {addr} is already used by listen.{other}")
        seen[(addr.host, addr.port)] = key
    return ListenConfig(**addrs)


def _parse_timeouts(sec: Mapping[str, Any]) -> TimeoutsConfig:
    positive = ("start", "ready", "hook")
    non_negative = ("drain", "analysis_window", "scale_down_delay")
    _only_keys(sec, "timeouts", set(positive) | set(non_negative))
    d = TimeoutsConfig()
    values: dict[str, float] = {}
    for key in positive:
        values[key] = _number(sec, "timeouts", key, getattr(d, key), positive=True, unit="seconds")
    for key in non_negative:
        values[key] = _number(sec, "timeouts", key, getattr(d, key), positive=False, unit="seconds")
    return TimeoutsConfig(**values)


def _parse_analysis(sec: Mapping[str, Any]) -> AnalysisConfig:
    _only_keys(
        sec,
        "analysis",
        {
            "max_error_rate",
            "max_error_rate_ratio",
            "max_p95_ratio",
            "min_p95_ms",
            "min_requests",
            "confidence_z",
            "failure_limit",
            "check_interval",
        },
    )
    d = AnalysisConfig()
    rate = _number(sec, "analysis", "max_error_rate", d.max_error_rate, positive=False)
    if rate > 1:
        raise ConfigError(
            f"analysis.max_error_rate: a fraction between 0 and 1 (0.02 = 2%), got {rate}"
        )
    return AnalysisConfig(
        max_error_rate=rate,
        max_error_rate_ratio=_number(
            sec, "analysis", "max_error_rate_ratio", d.max_error_rate_ratio, positive=True
        ),
        max_p95_ratio=_number(sec, "analysis", "max_p95_ratio", d.max_p95_ratio, positive=True),
        min_p95_ms=_number(
            sec, "analysis", "min_p95_ms", d.min_p95_ms, positive=False, unit="milliseconds"
        ),
        min_requests=_integer(sec, "analysis", "min_requests", d.min_requests, minimum=0),
        confidence_z=_number(sec, "analysis", "confidence_z", d.confidence_z, positive=True),
        failure_limit=_integer(sec, "analysis", "failure_limit", d.failure_limit, minimum=1),
        check_interval=_number(
            sec, "analysis", "check_interval", d.check_interval, positive=True, unit="seconds"
        ),
    )


def _parse_shadow(sec: Mapping[str, Any]) -> ShadowConfig:
    keys = {
        "share",
        "duration",
        "min_requests",
        "max_error_rate",
        "max_p95_ratio",
        "min_p95_ms",
        "synthetic_paths",
    }
    _only_keys(sec, "shadow", keys)
    d = ShadowConfig()
    share = _number(sec, "shadow", "share", d.share, positive=False)
    rate = _number(sec, "shadow", "max_error_rate", d.max_error_rate, positive=False)
    for key, value in (("share", share), ("max_error_rate", rate)):
        if value > 1:
            raise ConfigError(f"shadow.{key}: a fraction between 0 and 1, got {value}")
    paths = sec.get("synthetic_paths", [])
    if not isinstance(paths, list) or not all(
        isinstance(p, str) and p.startswith("/") for p in paths
    ):
        raise ConfigError('shadow.synthetic_paths: a list of paths such as ["/", "/doctors"]')
    return ShadowConfig(
        share=share,
        duration=_number(sec, "shadow", "duration", d.duration, positive=True, unit="seconds"),
        min_requests=_integer(sec, "shadow", "min_requests", d.min_requests, minimum=1),
        max_error_rate=rate,
        max_p95_ratio=_number(sec, "shadow", "max_p95_ratio", d.max_p95_ratio, positive=True),
        min_p95_ms=_number(
            sec, "shadow", "min_p95_ms", d.min_p95_ms, positive=False, unit="milliseconds"
        ),
        synthetic_paths=tuple(paths),
    )


def _parse_switch(sec: Mapping[str, Any]) -> SwitchConfig:
    _only_keys(sec, "switch", {"steps", "step_window"})
    d = SwitchConfig()
    steps = sec.get("steps", list(d.steps))
    how = "a list of whole percents, strictly increasing, each 1..100, ending at 100"
    if not isinstance(steps, list) or not steps:
        raise ConfigError(f"switch.steps: {how} (e.g. [10, 50, 100]), got {steps!r}")
    for p in steps:
        if isinstance(p, bool) or not isinstance(p, int) or not 1 <= p <= 100:
            raise ConfigError(f"switch.steps: {how}; {p!r} is not a whole percent 1..100")
    if any(a >= b for a, b in itertools.pairwise(steps)):
        raise ConfigError(f"switch.steps: {how}; {steps} is not strictly increasing")
    if steps[-1] != 100:
        raise ConfigError(f"switch.steps: {how}; {steps} must end at 100 (everyone switched)")
    return SwitchConfig(
        steps=tuple(steps),
        step_window=_number(
            sec, "switch", "step_window", d.step_window, positive=True, unit="seconds"
        ),
    )


# --------------------------------------------------------------------------- helpers


def _tname(value: object) -> str:
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }
    return names.get(type(value), type(value).__name__)


def _reject_tokens(data: Mapping[str, Any], prefix: str) -> None:
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if "token" in key.lower() and not prefix.startswith("app.env"):
            raise ConfigError(
                f"{dotted}: the admin token must not be in the config file; "
                f"remove it and set {ADMIN_TOKEN_ENV} in the environment instead"
            )
        if isinstance(value, Mapping):
            _reject_tokens(value, f"{dotted}.")


def _only_keys(sec: Mapping[str, Any], name: str, allowed: set[str]) -> None:
    for key in sec:
        if key not in allowed:
            where = f"{name}.{key}" if name else key
            raise ConfigError(
                f"{where}: unknown {'key' if name else 'section'}; "
                f"expected one of: {', '.join(sorted(allowed))}"
            )


def _section(data: Mapping[str, Any], name: str, *, required: bool = False) -> Mapping[str, Any]:
    if name not in data:
        if required:
            raise ConfigError(f"[{name}]: required section is missing")
        return {}
    sec = data[name]
    if not isinstance(sec, Mapping):
        raise ConfigError(f"{name}: expected a [{name}] table, got {_tname(sec)}")
    return sec


def _string(sec: Mapping[str, Any], name: str, key: str, default: str) -> str:
    value = sec.get(key, default)
    if not isinstance(value, str):
        raise ConfigError(f"{name}.{key}: expected a string, got {_tname(value)}")
    return value


def _url_path(sec: Mapping[str, Any], key: str, default: str) -> str:
    value = _string(sec, "app", key, default)
    if not value.startswith("/") or any(c.isspace() for c in value):
        raise ConfigError(f'app.{key}: expected a URL path like "/healthz", got {value!r}')
    return value


def _number(
    sec: Mapping[str, Any],
    name: str,
    key: str,
    default: float,
    *,
    positive: bool,
    unit: str = "",
) -> float:
    value = sec.get(key, default)
    what = f"a {'positive' if positive else 'non-negative'} number" + (
        f" of {unit}" if unit else ""
    )
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name}.{key}: must be {what}, got {_tname(value)} {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < 0 or (positive and number == 0):
        raise ConfigError(f"{name}.{key}: must be {what}, got {value!r}")
    return number


def _integer(sec: Mapping[str, Any], name: str, key: str, default: int, *, minimum: int) -> int:
    value = sec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(
            f"{name}.{key}: must be an integer >= {minimum}, got {_tname(value)} {value!r}"
        )
    if value < minimum:
        raise ConfigError(f"{name}.{key}: must be an integer >= {minimum}, got {value}")
    return value


def _directory(sec: Mapping[str, Any], name: str, key: str, default: str, root: Path) -> Path:
    value = _string(sec, name, key, default)
    if not value.strip():
        raise ConfigError(f"{name}.{key}: must not be empty")
    p = Path(value).expanduser()
    return p if p.is_absolute() else (root / p).resolve()


def _placeholders_in(text: str) -> set[str]:
    names: set[str] = set()
    for _, field_name, _, _ in string.Formatter().parse(text):
        if field_name is not None:
            names.add(field_name)
    return names


def _template(sec: Mapping[str, Any], name: str, key: str, allowed: frozenset[str]) -> Template:
    dotted = f"{name}.{key}"
    source = sec[key]
    if not isinstance(source, str):
        raise ConfigError(f"{dotted}: expected a command string, got {_tname(source)}")
    try:
        args = shlex.split(source)
    except ValueError as exc:
        raise ConfigError(f"{dotted}: cannot split into arguments ({exc}): {source!r}") from None
    if not args:
        raise ConfigError(f"{dotted}: must not be empty")
    for arg in args:
        try:
            fields = list(string.Formatter().parse(arg))
        except ValueError as exc:
            raise ConfigError(
                f"{dotted}: bad placeholder syntax ({exc}); write {{{{ and }}}} for literal braces"
            ) from None
        for _, field_name, spec, conv in fields:
            if field_name is None:
                continue
            if field_name not in allowed:
                shown = f"{{{field_name}}}"
                raise ConfigError(
                    f"{dotted}: unknown placeholder {shown}; "
                    f"allowed: {', '.join('{' + p + '}' for p in sorted(allowed))}"
                )
            if spec or conv:
                raise ConfigError(
                    f"{dotted}: placeholder {{{field_name}}} must not have a format spec "
                    "or conversion"
                )
    return Template(source=source, placeholders=allowed)


def _admin_token(environ: Mapping[str, str]) -> str | None:
    token = environ.get(ADMIN_TOKEN_ENV)
    if token is None:
        return None
    if not token.strip() or any(c.isspace() for c in token):
        raise ConfigError(
            f"{ADMIN_TOKEN_ENV}: is set but empty or contains whitespace; "
            "set it to a random string (e.g. `python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'`) or unset it"
        )
    return token
