"""The environment bluegreen gives the app: the one place it is built.

Layers, later ones winning: the release's own (``PYTHONPATH``, venv), ``[app] env``, the
app's directory (``[state] app_dir``) under ``[state] dir_env``, what a provider adds
(the shared database URL), the extra env of one deploy, then ``BLUEGREEN_RELEASE`` /
``BLUEGREEN_COLOUR`` / ``BLUEGREEN_COLOR``. The supervisor adds ``BLUEGREEN_INSTANCE`` and
``BLUEGREEN_PORT`` per instance; :func:`bluegreen.hooks.child_env` puts all of it over the
controller's own environment minus the admin token.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from bluegreen.config import Colour, Config
from bluegreen.processes import HOME_ENV
from bluegreen.release import Release

EnvProvider = Callable[[Release], Awaitable[Mapping[str, str]]]
"""Adds variables a release needs at run time (the database URL), obtained once."""


def base_env(config: Config) -> dict[str, str]:
    """``[app] env`` plus the app's directory under ``[state] dir_env``: what every command of
    the app gets, whichever release runs it. Never bluegreen's own state dir."""
    env = dict(config.app.env)
    if config.state.dir_env:
        env[config.state.dir_env] = str(config.state.app)
    return env


def colour_env(release: Release, colour: Colour) -> dict[str, str]:
    """Which release this is and which colour it runs as."""
    return {"BLUEGREEN_RELEASE": release.id, "BLUEGREEN_COLOUR": colour, "BLUEGREEN_COLOR": colour}


def instance_env(
    release: Release, colour: Colour, env: Mapping[str, str], *, instance_id: str, port: int
) -> dict[str, str]:
    """What one instance process gets: ``env`` (see :meth:`Environment.for_release`) with
    which release, colour, instance and port it is."""
    return {
        **release.env(),
        **env,
        **colour_env(release, colour),
        "BLUEGREEN_INSTANCE": instance_id,
        "BLUEGREEN_PORT": str(port),
    }


class Environment:
    """Builds the environment of ``release`` deployed to a colour, for instances and hooks."""

    def __init__(self, config: Config, provider: EnvProvider | None = None) -> None:
        self.config = config
        self._provider = provider
        self._provided: dict[str, str] = {}

    async def ensure(self, release: Release) -> None:
        """Ask the provider (once it answered, its values are kept for every release)."""
        if self._provider is not None:
            self._provided.update(await self._provider(release))

    def for_release(
        self, release: Release, colour: Colour, extra: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """Everything ``release`` on ``colour`` gets; ``extra`` is one deploy's own env."""
        return {
            **release.env(),
            **base_env(self.config),
            **self._provided,
            **(extra or {}),
            **colour_env(release, colour),
            # Marks every process started for the app (instances, hooks): a later daemon
            # finds them by it, to adopt or to reap (see bluegreen.processes).
            HOME_ENV: str(self.config.state.dir),
        }
