"""The migration rehearsal as plain functions, without a daemon: real scratch commands (tiny
Python one-liners), a fake instance runner and hook runner."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bluegreen import rehearsal
from bluegreen.config import Colour, Config, parse_config
from bluegreen.errors import StepFailed
from bluegreen.hooks import HookResult
from bluegreen.release import Release

# A URL that is not PostgreSQL: the data check (tests/bluegreen/test_dataguard.py) skips it.
WRITE = "import sys, pathlib; pathlib.Path(sys.argv[1]).write_text(sys.argv[2])"


def config(tmp: Path) -> Config:
    return parse_config(
        {
            "app": {"name": "t", "command": "{python} app.py --port {port}"},
            "hooks": {"migrate": "{python} migrate", "smoke": "{python} smoke {base_url}"},
            "database": {"url_command": "{python} url", "env": "APP_DB"},
            "migrations": {
                "plan": "{python} plan",
                "scratch_create": "{python} -c \"print('fake://scratch/1')\"",
                "scratch_drop": f'{{python}} -c "{WRITE}" {tmp / "dropped"} {{url}}',
            },
            "state": {"dir": str(tmp / "var")},
        },
        path=tmp / "bluegreen.toml",
        root=tmp,
        environ={},
    )


def release(tmp: Path, name: str) -> Release:
    d = tmp / name
    d.mkdir(exist_ok=True)
    return Release(id=name, dir=d, python=Path(sys.executable), deps_hash="h", source="x", venv=tmp)


@dataclass
class Inst:
    url: str


@dataclass
class Runner:
    started: list[tuple[str, Colour, str, dict[str, str]]] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)

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
    ) -> Any:
        self.started.append((id, colour, release.id, dict(env)))
        return Inst(url=f"http://127.0.0.1:9/{id}")

    async def wait_ready(self, instances: Sequence[Any], timeout: float) -> None:  # noqa: ASYNC109
        return None

    async def stop_instance(self, inst: Any, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        self.stopped.append(inst.url)


class Hooks:
    def __init__(self, fail: str = "") -> None:
        self.calls: list[tuple[list[str], dict[str, str]]] = []
        self.fail = fail

    async def __call__(self, argv: Sequence[str], **kwargs: Any) -> HookResult:
        self.calls.append((list(argv), dict(kwargs["env"])))
        if argv[1] == self.fail:
            return HookResult(False, 1, f"{self.fail}: it broke")
        return HookResult(True, 0, "fine")


def env_for(release: Release, colour: Colour) -> dict[str, str]:
    return {"RELEASE": release.id, "COLOUR": colour}


async def test_rehearse_runs_new_migrations_and_live_smoke_on_scratch(tmp_path: Path) -> None:
    runner, hooks, seen = Runner(), Hooks(), []
    out = await rehearsal.rehearse(
        config=config(tmp_path),
        new=release(tmp_path, "new"),
        new_colour="green",
        live=release(tmp_path, "live"),
        live_colour="blue",
        env_for=env_for,
        runner=runner,
        hook_runner=hooks,
        on_scratch=seen.append,
    )
    assert "passed its smoke test on the new schema" in out
    (migrate, menv), (smoke, senv) = hooks.calls
    assert migrate[1] == "migrate" and menv["APP_DB"] == "fake://scratch/1"
    assert menv["RELEASE"] == "new"
    # The live release's smoke runs against the instance started on the scratch database.
    assert smoke[1:] == ["smoke", "http://127.0.0.1:9/rehearsal"]
    assert senv["RELEASE"] == "live" and senv["APP_DB"] == "fake://scratch/1"
    assert runner.started[0][1:3] == ("blue", "live")
    assert runner.stopped == ["http://127.0.0.1:9/rehearsal"]
    assert (tmp_path / "dropped").read_text() == "fake://scratch/1"
    assert seen == ["fake://scratch/1", None]


async def test_failed_live_smoke_tells_the_story_and_still_drops(tmp_path: Path) -> None:
    runner, hooks, seen = Runner(), Hooks(fail="smoke"), []
    with pytest.raises(StepFailed, match="smoke test fails on the new schema") as caught:
        await rehearsal.rehearse(
            config=config(tmp_path),
            new=release(tmp_path, "new"),
            new_colour="green",
            live=release(tmp_path, "live"),
            live_colour="blue",
            env_for=env_for,
            runner=runner,
            hook_runner=hooks,
            on_scratch=seen.append,
        )
    assert "migrations applied to the scratch database" in caught.value.output
    assert caught.value.output.endswith("smoke: it broke")
    assert runner.stopped and (tmp_path / "dropped").exists()
    assert seen == ["fake://scratch/1", None]
