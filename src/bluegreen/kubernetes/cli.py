"""``bluegreen render kubernetes`` and ``bluegreen rehearse``: commands without the daemon.

Both read ``bluegreen.toml`` (``--config``) and nothing else of the one-host state; the
rehearsal reaches the database through ``[database] url_command`` only, which with
``CLINIC_DATABASE_URL`` set (a Kubernetes Job) just prints that URL.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from bluegreen.config import Colour, Config, load_config
from bluegreen.errors import ConfigError, StepFailed
from bluegreen.kubernetes.manifests import DEFAULT_PROMETHEUS, DEFAULT_SECRET, Options
from bluegreen.kubernetes.operations import render
from bluegreen.kubernetes.output import write_base
from bluegreen.release import Release

render_app = typer.Typer(help="Write the deployment for another engine.", no_args_is_help=True)


def _config(ctx: typer.Context) -> Config:
    path = getattr(ctx.obj, "config_path", Path("bluegreen.toml"))
    return load_config(Path(path), environ=os.environ)


@render_app.command("kubernetes")
def render_kubernetes(
    ctx: typer.Context,
    image: Annotated[str, typer.Option(help="The clinic image of this release, e.g. clinic:1.4")],
    out: Annotated[Path, typer.Option(help="Directory for the kustomize base.")],
    namespace: Annotated[str, typer.Option(help="Namespace of every object.")] = "clinic",
    live_image: Annotated[
        str | None,
        typer.Option(
            help="The image now live; rehearsal and live smoke use it (first deploy: none)."
        ),
    ] = None,
    manual: Annotated[bool, typer.Option(help="Wait for `kubectl argo rollouts promote`.")] = False,
    secret: Annotated[
        str, typer.Option(help="Name of the Secret with the app's secrets.")
    ] = DEFAULT_SECRET,
    prometheus_url: Annotated[
        str, typer.Option(help="Prometheus for the analysis.")
    ] = DEFAULT_PROMETHEUS,
    ingress_namespace: Annotated[
        str, typer.Option(help="Where the ingress controller runs.")
    ] = "ingress-nginx",
    monitoring_namespace: Annotated[
        str, typer.Option(help="Where Prometheus runs.")
    ] = "monitoring",
) -> None:
    """Render bluegreen.toml as Kubernetes manifests for Argo Rollouts (a kustomize base)."""
    opts = Options(
        image=image,
        namespace=namespace,
        live_image=live_image,
        manual=manual,
        secret_name=secret,
        prometheus_url=prometheus_url,
        ingress_namespace=ingress_namespace,
        monitoring_namespace=monitoring_namespace,
    )
    config = _config(ctx)
    objects = render(config, opts)
    written = write_base(objects, namespace, out)
    for path in written:
        typer.echo(str(path))
    for note in one_host_only(config):
        typer.echo(f"note: {note}", err=True)


def one_host_only(config: Config) -> list[str]:
    """Settings of ``bluegreen.toml`` the rendered Argo Rollouts blue-green does not carry,
    each said once at render time rather than silently dropped."""
    notes: list[str] = []
    if config.shadow.share > 0:
        notes.append(
            "[shadow] is not rendered: mirroring live reads to the preview is the one-host "
            "data plane's (Envoy); on Kubernetes the pre-promotion analysis is the smoke job"
        )
    if config.switch.phased:
        notes.append(
            "[switch] steps are not rendered: Argo Rollouts' blueGreen strategy switches "
            "atomically (a phased switch there is its canary strategy, not rendered here)"
        )
    return notes


def _database_url(config: Config) -> dict[str, str]:
    """``{[database] env: URL}`` from ``[database] url_command`` (as lint does)."""
    if config.database is None:
        raise ConfigError("database: the rehearsal needs a [database] section")
    values = {"python": sys.executable, "release": "working-tree", "release_dir": config.root}
    argv = config.database.url_command.render(**values)
    env = {**os.environ, **config.app.env}
    if config.state.dir_env:
        env[config.state.dir_env] = str(config.state.app)
    out = subprocess.run(
        argv, cwd=config.root, env=env, capture_output=True, text=True, check=False
    )
    if out.returncode != 0 or not out.stdout.strip():
        raise StepFailed(f"cannot reach the database: {out.stderr.strip() or out.stdout.strip()}")
    return {config.database.env: out.stdout.strip().splitlines()[-1]}


def _release(id_: str, directory: Path, python: Path) -> Release:
    return Release(
        id=id_,
        dir=directory,
        python=python,
        deps_hash="",
        source=str(directory),
        venv=python.parent.parent,
    )


def rehearse(
    ctx: typer.Context,
    live_dir: Annotated[
        Path | None,
        typer.Option(help="The live release's files (without: only the migrations are tried)."),
    ] = None,
    live_python: Annotated[
        Path | None, typer.Option(help="The live release's python (default LIVE_DIR/.venv).")
    ] = None,
    live_release: Annotated[str, typer.Option(help="The live release's id, for the log.")] = "live",
) -> None:
    """Rehearse this release's migrations on a scratch copy of the live schema, then run the
    live release and its smoke test on it; the scratch database is always dropped."""
    from bluegreen.rehearsal import rehearse as run_rehearsal
    from bluegreen.supervisor import Supervisor

    config = _config(ctx)
    mig = config.migrations
    if mig is None or mig.scratch_create is None or mig.scratch_drop is None:
        raise ConfigError("migrations.scratch_create/scratch_drop: needed for the rehearsal")
    database = _database_url(config)
    new = _release(os.environ.get("CLINIC_RELEASE_ID", "new"), config.root, Path(sys.executable))
    if live_dir is None:
        live, run_config = new, replace(config, hooks=replace(config.hooks, smoke=None))
    else:
        python = live_python or live_dir / ".venv" / "bin" / "python"
        live, run_config = _release(live_release, live_dir.resolve(), python), config
    state_env = {config.state.dir_env: str(config.state.app)} if config.state.dir_env else {}
    # A Job has no daemon, token or state, and only the app's directory is writable (an
    # emptyDir; the root filesystem is read-only): the instance logs go there.
    logs_dir = config.state.app / "logs"

    def env_for(release: Release, colour: Colour) -> dict[str, str]:
        return {**release.env(), **config.app.env, **state_env, **database}

    async def go() -> str:
        supervisor = Supervisor(on_change=lambda: None, log_dir=logs_dir)
        try:
            return await run_rehearsal(
                config=run_config,
                new=new,
                new_colour="green",
                live=live,
                live_colour="blue",
                env_for=env_for,
                runner=supervisor,
            )
        finally:
            await supervisor.stop_all()

    logs_dir.mkdir(parents=True, exist_ok=True)
    try:
        story = asyncio.run(go())
    except StepFailed as exc:
        typer.echo(exc.output, err=True)
        typer.echo(f"✘ rehearsal failed: {exc.message}", err=True)
        raise typer.Exit(1) from None
    typer.echo(story)
    if live_dir is None:
        typer.echo("no live release given (--live-dir): only the migrations were rehearsed")
    typer.echo("✔ rehearsal passed")
