"""``clinic serve|worker|db|seed|smoke|create-admin``: a thin shell over the library."""

from __future__ import annotations

import asyncio
import getpass
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError

from clinic.core.config import Settings
from clinic.core.errors import ClinicError
from clinic.health import uvicorn_log_config

T = TypeVar("T")

app = typer.Typer(help="The clinic: a doctor–patient telehealth application.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema and the embedded PostgreSQL.", no_args_is_help=True)
app.add_typer(db_app, name="db")


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        for err in exc.errors():
            where = (
                "CLINIC_" + "_".join(str(p) for p in err["loc"]).upper()
                if err["loc"]
                else "settings"
            )
            typer.echo(f"configuration error: {where}: {err['msg']}", err=True)
        raise typer.Exit(2) from exc


def database_url(settings: Settings, *, keep_running: bool = False) -> str:
    """The configured URL, or the embedded PostgreSQL under ``var/`` (started if needed;
    stopped when this process exits unless ``keep_running``)."""
    if settings.database_url is not None:
        return settings.database_url
    from clinic.core.embedded import EmbeddedPostgres

    pg = EmbeddedPostgres(settings.var_dir / "pgdata", keep_running=keep_running)
    return pg.ensure_database("clinic").replace("postgresql://", "postgresql+asyncpg://", 1)


def with_url(settings: Settings) -> Settings:
    return settings.model_copy(update={"database_url": database_url(settings)})


def _run(coro_fn: Callable[[Settings], Coroutine[Any, Any, T]], settings: Settings) -> T:
    try:
        return asyncio.run(coro_fn(settings))
    except ClinicError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from exc


def smoke_password(settings: Settings) -> str:
    if settings.smoke_password:
        return settings.smoke_password
    from clinic.core.secrets import generated_secret

    return generated_secret(settings.secret_file("smoke-password"))


async def _seed(settings: Settings, *, demo: bool, smoke: bool) -> tuple[int, str | None]:
    from clinic.core.db import make_engine, make_sessionmaker
    from clinic.core.secrets import generated_secret
    from clinic.seed import seed_demo, seed_smoke

    assert settings.database_url is not None
    engine = make_engine(settings.database_url, pool_size=2)
    sessions = make_sessionmaker(engine)
    created, demo_password = 0, None
    try:
        if demo:
            from clinic.visits.demo import seed_demo_visit

            demo_password = generated_secret(settings.secret_file("demo-password"), length=9)
            created += await seed_demo(sessions, settings, demo_password)
            # A video visit Maria and Dr. Weber can join right away.
            await seed_demo_visit(sessions, settings)
        if smoke:
            created += await seed_smoke(sessions, settings, smoke_password(settings))
    finally:
        await engine.dispose()
    return created, demo_password


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535)] = 8000,
    migrate: Annotated[bool, typer.Option(help="Run migrations before serving.")] = False,
    demo: Annotated[bool, typer.Option(help="Migrate and seed demo data first.")] = False,
) -> None:
    """Serve the clinic over HTTP (embedded PostgreSQL when no CLINIC_DATABASE_URL is set)."""
    import uvicorn

    from clinic.app import create_app
    from clinic.core import schema

    settings = with_url(load_settings())
    assert settings.database_url is not None
    if migrate or demo:
        schema.upgrade(settings.database_url)
    if demo:
        created, password = _run(lambda s: _seed(s, demo=True, smoke=True), settings)
        if created:
            typer.echo(f"seeded {created} demo accounts")
        typer.echo(
            "demo accounts: e.g. maria.rossi@demo.example.org (patient), "
            f"anna.weber@demo.example.org (doctor); password: {password}"
        )
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it; exiting through SystemExit
    # instead of the default handler lets atexit stop the embedded PostgreSQL we started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        # X-Forwarded-For/-Proto are believed only from these peers (the data plane); from
        # anyone else they are ignored, so the login throttle and the audit see the real peer.
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        log_level="info",
        # Answered health checks (every second, from Envoy and the supervisor) stay out of
        # the access log; failed ones are still logged.
        log_config=uvicorn_log_config(),
        timeout_graceful_shutdown=10,
        ws_max_size=settings.max_websocket_message_bytes,
    )


@app.command()
def worker() -> None:
    """Run a job worker (emails, reminders, no-shows) until SIGTERM/SIGINT; it drains
    within CLINIC_WORKER_DRAIN_TIMEOUT. Any number may run, beside instances or not."""
    settings = with_url(load_settings())
    _run(run_worker, settings)


async def run_worker(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """The ``clinic worker`` loop: start, wait for a signal (or ``stop``), drain."""
    from clinic.core.db import make_engine, make_sessionmaker
    from clinic.notify.worker import JobWorker

    assert settings.database_url is not None
    engine = make_engine(settings.database_url, pool_size=settings.worker_concurrency + 1)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    job_worker = JobWorker(settings, make_sessionmaker(engine))
    try:
        await job_worker.start()
        typer.echo("worker started; stop with SIGTERM or Ctrl-C")
        done = asyncio.ensure_future(job_worker.wait())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({done, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
    finally:
        await job_worker.stop()
        await engine.dispose()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    typer.echo("worker stopped")


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument()] = "head",
    seed_smoke: Annotated[
        bool, typer.Option(help="Also create the smoke-test accounts (deploy hook).")
    ] = False,
) -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    from clinic.core import schema

    settings = with_url(load_settings())
    assert settings.database_url is not None
    schema.upgrade(settings.database_url, revision, lock_timeout=settings.migration_lock_timeout)
    typer.echo(f"database at {revision}")
    if seed_smoke or settings.seed_demo:
        demo = settings.seed_demo
        created, password = _run(lambda s: _seed(s, demo=demo, smoke=seed_smoke), settings)
        typer.echo(f"seeded ({created} accounts created)")
        if password:
            typer.echo(
                "demo accounts: maria.rossi@demo.example.org (patient), "
                f"anna.weber@demo.example.org (doctor); password: {password}"
            )


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision or 'base'.")],
) -> None:
    """Undo migrations down to REVISION (the deployer's way back when the live release fails)."""
    from clinic.core import schema

    settings = with_url(load_settings())
    assert settings.database_url is not None
    schema.downgrade(settings.database_url, revision, lock_timeout=settings.migration_lock_timeout)
    typer.echo(f"database at {revision}")


async def _current_revision(url: str) -> str | None:
    from clinic.core import schema
    from clinic.core.db import make_engine

    engine = make_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            return await schema.current_revision(conn)
    finally:
        await engine.dispose()


@db_app.command("current")
def db_current() -> None:
    """Print the database's revision ('none' for an empty database)."""
    settings = with_url(load_settings())
    assert settings.database_url is not None
    typer.echo(asyncio.run(_current_revision(settings.database_url)) or "none")


@db_app.command("plan")
def db_plan(
    start: Annotated[
        str | None,
        typer.Option("--from", help="Plan from this revision ('base': empty) instead of the DB's."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON for `bluegreen`.")] = False,
) -> None:
    """The migrations this release would run: phase, what they remove, offline SQL."""
    import json

    from clinic.core.migration_plan import plan

    settings = load_settings()
    if start is None:
        settings = with_url(settings)
        assert settings.database_url is not None
        current = asyncio.run(_current_revision(settings.database_url))
    else:
        current = None if start == "base" else start
    url = settings.database_url or "postgresql+asyncpg://offline/clinic"
    try:
        result = plan(url, current)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    if as_json:
        typer.echo(json.dumps(result))
        return
    typer.echo(f"database at {result['current'] or 'empty'}, release head {result['head']}")
    for r in result["revisions"]:
        removes = f" removes {', '.join(r['removes'])}" if r["removes"] else ""
        typer.echo(f"  {r['revision']} {r['phase']}{removes}: {r['doc'].splitlines()[0]}")


scratch_app = typer.Typer(help="Scratch databases for the deploy rehearsal.", no_args_is_help=True)
db_app.add_typer(scratch_app, name="scratch")


@scratch_app.command("create")
def scratch_create() -> None:
    """Create a database with the live schema and the smoke accounts; print its URL."""
    from clinic.core.scratch import create_scratch

    settings = with_url(load_settings())
    assert settings.database_url is not None
    typer.echo(asyncio.run(create_scratch(settings.database_url)))


@scratch_app.command("drop")
def scratch_drop(url: Annotated[str, typer.Argument(help="The URL `create` printed.")]) -> None:
    """Drop a scratch database (only ever one `create` made)."""
    from clinic.core.scratch import drop_scratch

    try:
        asyncio.run(drop_scratch(url))
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo("scratch database dropped")


@db_app.command("url")
def db_url(
    keep_running: Annotated[
        bool, typer.Option(help="Leave the embedded PostgreSQL running after this exits.")
    ] = False,
) -> None:
    """Print the database URL (starting the embedded PostgreSQL if none is configured)."""
    url = database_url(load_settings(), keep_running=keep_running)
    typer.echo(url.replace("postgresql+asyncpg://", "postgresql://", 1))


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded PostgreSQL under ``var/`` (no-op with CLINIC_DATABASE_URL set)."""
    settings = load_settings()
    if settings.database_url is not None:
        typer.echo("an external database is configured; nothing to stop")
        return
    from clinic.core.embedded import stop_embedded

    stopped = stop_embedded(settings.var_dir / "pgdata")
    typer.echo("embedded PostgreSQL stopped" if stopped else "embedded PostgreSQL was not running")


@app.command()
def seed(
    demo: Annotated[bool, typer.Option(help="Demo doctors and patients.")] = True,
    smoke: Annotated[bool, typer.Option(help="The smoke-test patient and doctor.")] = False,
) -> None:
    """Create demo data and/or the smoke-test accounts (idempotent)."""
    settings = with_url(load_settings())
    created, password = _run(lambda s: _seed(s, demo=demo, smoke=smoke), settings)
    typer.echo(f"created {created} accounts")
    if password:
        typer.echo(f"demo password: {password}")


@app.command("create-admin")
def create_admin(
    email: Annotated[str | None, typer.Option(help="Asked for on a terminal if left out.")] = None,
    name: Annotated[str, typer.Option(help="Display name.")] = "Administrator",
    password_stdin: Annotated[
        bool, typer.Option(help="Read the password from stdin (scripts, no terminal).")
    ] = False,
) -> None:
    """Create an administrator account (the first one approves doctors)."""
    from pydantic import EmailStr, TypeAdapter

    from clinic.accounts import service
    from clinic.core.db import make_engine, make_sessionmaker

    if not sys.stdin.isatty() and (email is None or not password_stdin):
        # getpass would warn and read the password from stdin with echo; explain instead.
        typer.echo(
            "error: no terminal to ask on. Give --email and pipe the password in with "
            "--password-stdin, e.g.\n"
            "  printf '%s\\n' \"$PASSWORD\" | clinic create-admin --email admin@example.org "
            "--password-stdin",
            err=True,
        )
        raise typer.Exit(2)
    if email is None:
        email = str(typer.prompt("Email"))
    try:
        TypeAdapter(EmailStr).validate_python(email)
    except ValidationError as exc:
        typer.echo(f"error: not a valid email address: {email}", err=True)
        raise typer.Exit(2) from exc
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Repeat: ") != password:
            typer.echo("error: the passwords differ", err=True)
            raise typer.Exit(2)

    async def go(settings: Settings) -> None:
        assert settings.database_url is not None
        engine = make_engine(settings.database_url, pool_size=1)
        try:
            async with make_sessionmaker(engine)() as session:
                await service.create_admin(
                    session=session, email=email, name=name, password=password, settings=settings
                )
        finally:
            await engine.dispose()

    _run(go, with_url(load_settings()))
    typer.echo(f"admin {email} created")


@app.command()
def smoke(
    base_url: Annotated[
        str, typer.Option(help="Where the clinic answers, e.g. http://127.0.0.1:8002")
    ],
) -> None:
    """Run the smoke-test patient journey against BASE_URL; non-zero exit names the failed step."""
    from clinic.smoke import SmokeFailed, run_smoke

    settings = load_settings()
    try:
        run_smoke(base_url, smoke_password(settings))
    except SmokeFailed as exc:
        typer.echo(f"smoke: FAILED: {exc}", err=True)
        raise typer.Exit(1) from exc


def main(argv: list[str] | None = None) -> int:
    """Entry point: returns the exit code (0 ok, 1 operation failed, 2 bad usage/config)."""
    from clinic.app import compose_features

    compose_features()  # every command's services see the same composition as the app's
    try:
        # Not standalone, click returns the exit code of typer.Exit instead of exiting.
        code = app(args=argv, standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        return 1
    except typer.TyperException as exc:  # usage errors: unknown command, bad option
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        return 2
    return code if isinstance(code, int) else 0
