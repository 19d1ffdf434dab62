"""``bluegreen``: run the daemon (``up``) and operate it over its admin API.

Exit codes: 0 ok, 1 the operation failed, 2 bad usage or configuration. Every command
but ``up`` talks to the daemon's admin API (address from ``<state dir>/daemon.json``,
else ``[listen] admin``) with the admin token (``BLUEGREEN_ADMIN_TOKEN`` or
``<state dir>/admin-token``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from bluegreen import processes
from bluegreen.config import Config, load_config
from bluegreen.controller import DeployRequest
from bluegreen.daemon import (
    LOG_FILE,
    ensure_token,
    read_info,
    read_token,
    run_daemon,
    stop_leftovers,
)
from bluegreen.environment import base_env
from bluegreen.errors import BluegreenError
from bluegreen.hooks import squawk_executable
from bluegreen.private import open_private_binary
from bluegreen.summary import deploy_line, weights_line

app = typer.Typer(
    help="Blue/green deployments for an HTTP app described by bluegreen.toml.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(highlight=False)
err = Console(stderr=True, highlight=False)

FINAL = {"succeeded", "failed", "aborted", "rolled_back"}
STEP_STYLE = {"ok": "green", "failed": "red", "skipped": "dim", "running": "yellow"}
DETACH_TIMEOUT = 120.0
POLL = 0.25


@dataclass(slots=True)
class Options:
    config_path: Path


def _fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(code)


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[
        Path,
        typer.Option("--config", "-c", envvar="BLUEGREEN_CONFIG", help="Path of bluegreen.toml."),
    ] = Path("bluegreen.toml"),
) -> None:
    ctx.obj = Options(config_path=config)


def _config(ctx: typer.Context) -> Config:
    opts: Options = ctx.obj
    try:
        return load_config(opts.config_path, environ=os.environ)
    except BluegreenError as exc:
        _fail(exc.message, exc.exit_code)


_local = threading.local()  # .clients: httpx clients of this main() call, closed at its end


class Api:
    """A small admin API client that turns failures into operator messages."""

    def __init__(self, config: Config, timeout: float = 30.0) -> None:
        info = read_info(config) or {}
        admin = info.get("admin")
        self.base = admin if isinstance(admin, str) else config.listen.admin.url
        token = read_token(config)
        if token is None:
            _fail(
                "no admin token: set BLUEGREEN_ADMIN_TOKEN or start the daemon with "
                "`bluegreen up` (it stores one in the state dir)",
                2,
            )
        self.client = httpx.Client(
            base_url=self.base,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            trust_env=False,
        )
        if not hasattr(_local, "clients"):
            _local.clients = []
        _local.clients.append(self.client)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Answer JSON of ``method path``; exits 1 with the API's message on failure."""
        try:
            resp = self.client.request(method, path, json=body)
        except httpx.TransportError as exc:
            _fail(f"the bluegreen daemon does not answer at {self.base} ({exc}); is it up?")
        try:
            data = resp.json()
        except ValueError:
            data = {"message": resp.text}
        if resp.status_code >= 400:
            _fail(_error_message(data, resp.text), 2 if resp.status_code in (400, 401) else 1)
        return data

    def answers(self) -> bool:
        """Whether a daemon answers (with our token)."""
        try:
            return self.client.get("/api/status", timeout=2.0).status_code == 200
        except httpx.TransportError:
            return False


def _error_message(data: object, text: str) -> str:
    """The message of the admin API's one error shape, ``{"error": {"code", "message"}}``."""
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return str(data["error"].get("message", text))
    return text


def _run_loop(main: Coroutine[Any, Any, int]) -> int:
    """Run the daemon on uvloop when installed (it comes with uvicorn[standard])."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, IndexError):
        return False


# --------------------------------------------------------------------------- up / down


@app.command()
def up(
    ctx: typer.Context,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Run in the background.")] = False,
    path: Annotated[
        Path | None, typer.Option(help="First deploy: this directory instead of HEAD.")
    ] = None,
    ref: Annotated[str | None, typer.Option(help="First deploy: this git ref.")] = None,
) -> None:
    """Start the daemon (foreground unless --detach); first start deploys HEAD to blue."""
    config = _config(ctx)
    if path is not None and ref is not None:
        _fail("give either --path or --ref, not both", 2)
    if path is not None and not path.is_dir():
        _fail(f"{path}: not a directory", 2)
    token, generated = ensure_token(config)
    api = Api(config)
    info = read_info(config)
    old_pid = info.get("pid") if info else None
    if isinstance(old_pid, int) and _pid_alive(old_pid) and api.answers():
        console.print(f"bluegreen daemon already running (pid {old_pid}); attaching")
        _print_status(api.call("GET", "/api/status"))
        return
    if generated:
        console.print(f"admin token (stored in {config.state.dir / 'admin-token'}): {token}")
    initial = DeployRequest(ref=ref, path=path.resolve() if path else None)
    if not detach:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        # Health checks poll every instance twice a second: their requests are not news.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        try:
            code = _run_loop(run_daemon(config, token=token, initial=initial))
        except BluegreenError as exc:
            _fail(exc.message, exc.exit_code)
        raise typer.Exit(code)
    argv = [sys.executable, "-m", "bluegreen", "--config", str(config.path), "up"]
    if path is not None:
        argv += ["--path", str(path.resolve())]
    if ref is not None:
        argv += ["--ref", ref]
    log_path = config.state.dir / LOG_FILE
    with open_private_binary(log_path) as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=config.root,
        )
    deadline = time.monotonic() + DETACH_TIMEOUT
    while True:
        info = read_info(config)
        if info and info.get("pid") == proc.pid:
            api = Api(config)
            if api.answers():
                break
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").splitlines()[-20:]
            _fail(f"the daemon exited with code {proc.returncode}:\n" + "\n".join(tail))
        if time.monotonic() > deadline:
            _fail(f"the daemon did not answer within {DETACH_TIMEOUT:g}s; see {log_path}")
        time.sleep(0.1)
    https = f"{info.get('https')} and " if info.get("https") else ""
    console.print(
        f"bluegreen daemon started (pid {proc.pid}, log {log_path}); "
        f"{config.app.name} on {https}{info.get('public')}, dashboard {info.get('admin')}/"
    )


@app.command()
def down(ctx: typer.Context) -> None:
    """Stop everything: the daemon, its instances, Envoy and the database; wait for it."""
    config = _config(ctx)
    info = read_info(config)
    pid = info.get("pid") if info else None
    if not isinstance(pid, int) or not _pid_alive(pid):
        notes = asyncio.run(stop_leftovers(config))
        console.print("bluegreen daemon is not running; stopped what it left serving")
        for note in notes:
            console.print(f"  {note}")
        return
    Api(config).call("POST", "/api/shutdown")
    deadline = time.monotonic() + 60
    while _pid_alive(pid) and pid != os.getpid():
        if time.monotonic() > deadline:
            _fail(f"daemon pid {pid} still running after 60s")
        time.sleep(0.1)
    console.print(f"bluegreen daemon stopped (pid {pid})")


# --------------------------------------------------------------------------- deploys


def _steps_table(deploy: dict[str, Any]) -> Table:
    table = Table(
        title=f"deploy #{deploy['id']} of {deploy['release_id']} ({deploy['source']})",
        title_justify="left",
    )
    table.add_column("step")
    table.add_column("status")
    table.add_column("time", justify="right")
    table.add_column("output", overflow="fold", max_width=70)
    for s in deploy["steps"]:
        style = STEP_STYLE.get(s["status"], "")
        if s["duration_s"] is not None:
            took = f"{s['duration_s']:.1f}s"
        else:
            started = _parse_time(s["started_at"])
            took = f"{time.time() - started:.0f}s…" if started else ""
        last = [line for line in s["output"].splitlines() if line.strip()][-1:] or [""]
        # Output is the app's text, not markup: "[redacted]" and "[shadow]" must show.
        output = escape(last[0][:200])
        table.add_row(s["name"], f"[{style}]{s['status']}[/{style}]", took, output)
    return table


def _parse_time(value: str | None) -> float | None:
    from datetime import datetime

    return None if value is None else datetime.fromisoformat(value).timestamp()


def verdict(deploy: dict[str, Any]) -> str:
    """The one-line summary of a finished deploy."""
    took = f" in {deploy['duration_s']:.1f}s" if deploy.get("duration_s") is not None else ""
    head = f"deploy #{deploy['id']} of {deploy['release_id']}"
    if deploy["status"] == "running":  # in retire: live, old colour kept warm
        switch = next((s for s in deploy["steps"] if s["name"] == "switch"), None)
        where = f" ({escape(switch['output'])})" if switch and switch["output"] else ""
        return (
            f"✔ {head} succeeded{where}; the old colour stays warm for `bluegreen rollback` "
            "until it is retired"
        )
    if deploy["status"] == "succeeded":
        switch = next((s for s in deploy["steps"] if s["name"] == "switch"), None)
        where = f" ({escape(switch['output'])})" if switch and switch["output"] else ""
        return f"✔ {head} succeeded{took}{where}"
    why = escape(deploy.get("error") or "no reason recorded")
    return f"✘ {head} {deploy['status']}{took}: {why}"


def follow(api: Api, deploy_id: int, *, live: bool = True) -> dict[str, Any]:
    """Poll the deploy until it finishes, showing its steps live; return it."""
    deploy: dict[str, Any] = api.call("GET", f"/api/deploys/{deploy_id}")
    said_approve = False
    with Live(_steps_table(deploy), console=console, refresh_per_second=4, transient=False) as view:
        while deploy["status"] not in FINAL:
            time.sleep(POLL)
            deploy = api.call("GET", f"/api/deploys/{deploy_id}")
            if live:
                view.update(_steps_table(deploy))
            running = [s for s in deploy["steps"] if s["status"] == "running"]
            if running and running[-1]["name"] == "retire":
                break  # live and analysed; the old colour only waits to be retired
            if running and running[-1]["name"] == "approve" and not said_approve:
                said_approve = True
                view.console.print(
                    "waiting for approval: run `bluegreen promote` (or `bluegreen rollback`)"
                )
        view.update(_steps_table(deploy))
    console.line()
    for s in deploy["steps"]:
        if s["status"] == "failed" and s["output"]:
            err.print(f"[red]--- {s['name']} output:[/red]")
            err.print(s["output"][-3000:], markup=False)
    return deploy


@app.command()
def deploy(
    ctx: typer.Context,
    ref: Annotated[
        str | None, typer.Argument(help="Git ref of the app repo (default HEAD).")
    ] = None,
    path: Annotated[Path | None, typer.Option(help="Deploy this directory instead.")] = None,
    manual: Annotated[bool, typer.Option(help="Wait for `promote` before switching.")] = False,
) -> None:
    """Deploy REF (or --path DIR) to the colour that is not live, showing each step."""
    if ref is not None and path is not None:
        _fail("give either REF or --path, not both", 2)
    if path is not None and not path.is_dir():
        _fail(f"{path}: not a directory", 2)
    api = Api(_config(ctx))
    body: dict[str, Any] = {"manual": manual}
    if ref is not None:
        body["ref"] = ref
    if path is not None:
        body["path"] = str(path.resolve())
    started = api.call("POST", "/api/deploys", body)
    result = follow(api, int(started["deploy_id"]))
    console.print(verdict(result))
    raise typer.Exit(0 if result["status"] in ("succeeded", "running") else 1)


@app.command()
def promote(ctx: typer.Context) -> None:
    """Approve the manual deploy waiting for approval, or skip a phased switch's remaining
    steps (the new colour gets every session now)."""
    console.print(Api(_config(ctx)).call("POST", "/api/promote")["message"])


@app.command()
def rollback(ctx: typer.Context) -> None:
    """Back to the last good release (at once while the old colour is still warm)."""
    api = Api(_config(ctx), timeout=120)
    answer = api.call("POST", "/api/rollback")
    console.print(f"{escape(answer['message'])} ({answer['seconds']:.2f}s)")
    d = api.call("GET", f"/api/deploys/{answer['deploy_id']}")
    if d["source"] == "rollback" and d["status"] == "running":
        d = follow(api, int(d["id"]))
        console.print(verdict(d))
        raise typer.Exit(0 if d["status"] in ("succeeded", "running") else 1)


# --------------------------------------------------------------------------- status


def _print_status(st: dict[str, Any]) -> None:
    live = st["live_colour"]
    colour = live or "white"
    console.print(
        f"[bold]{st['app']}[/bold]: live [bold {colour}]{live or 'nothing'}[/bold {colour}] "
        f"release {st['live_release'] or '-'} (previous {st['previous_release'] or '-'}), "
        f"mode {st['mode']}"
    )
    urls = st.get("urls", {})
    https = f"https {urls['https']}  " if urls.get("https") else ""
    console.print(
        f"{https}public {urls.get('public')}  preview {urls.get('preview')}  "
        f"dashboard {urls.get('admin')}/"
    )
    table = Table("instance", "colour", "release", "pid", "port", "state", "health", "restarts")
    for i in st["instances"]:
        health = "[green]healthy[/green]" if i["healthy"] else "[red]unhealthy[/red]"
        table.add_row(
            i["id"] + (" *" if i["live"] else ""),
            i["colour"],
            i["release"],
            str(i["pid"]),
            str(i["port"]),
            i["state"],
            health,
            str(i["restarts"]),
        )
    console.print(table)
    for c, r in st["rates_last_minute"].items():
        console.print(
            f"{c}: {r['requests_per_s']} req/s, error rate {r.get('error_rate', 0.0):.2%} "
            f"({r['errors_5xx_per_s']} 5xx/s, last minute)"
        )
    phased = weights_line(st)
    if phased is not None:
        console.print(phased, markup=False, highlight=False)
    line = deploy_line(st.get("running_deploy"), st.get("warm"))
    if line is not None:
        console.print(line, markup=False, highlight=False)


def _database_in_use(cfg: Config) -> bool:
    """A daemon of this state dir runs, or a process it started (an instance serving on
    while the daemon is down): the shared database is theirs, never to be stopped here."""
    info = read_info(cfg)
    pid = info.get("pid") if info else None
    return (isinstance(pid, int) and _pid_alive(pid)) or bool(processes.marked(cfg.state.dir))


@contextlib.contextmanager
def _database_for_command(
    cfg: Config, env: dict[str, str], values: dict[str, Any]
) -> Iterator[str]:
    """``[database] url_command``'s URL for a one-off command. A database that no daemon or
    instance uses is stopped afterwards (``stop_command``): a command that started the
    embedded PostgreSQL for itself does not leave it running."""
    assert cfg.database is not None
    in_use = _database_in_use(cfg)
    url = subprocess.run(
        cfg.database.url_command.render(**values),
        cwd=cfg.root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        if url.returncode != 0 or not url.stdout.strip():
            _fail(f"cannot reach the database: {url.stderr.strip() or url.stdout.strip()}")
        yield url.stdout.strip().splitlines()[-1]
    finally:
        if not in_use and cfg.database.stop_command is not None:
            subprocess.run(
                cfg.database.stop_command.render(**values),
                cwd=cfg.root,
                env=env,
                capture_output=True,
                check=False,
            )


@app.command("lint-migrations")
def lint_migrations(
    ctx: typer.Context,
    every: Annotated[
        bool,
        typer.Option("--all", help="Lint every migration, as if from an empty database."),
    ] = False,
) -> None:
    """Lint the migrations the working tree would run on the live database (squawk plus the
    expand/contract rules), the same check every deploy makes first."""
    from bluegreen.migrations import Plan, ReleaseHead, check_contracts, lint
    from bluegreen.state import StateStore

    cfg = _config(ctx)
    mig = cfg.migrations
    if mig is None:
        _fail("bluegreen.toml has no [migrations] section", 2)
    env = {**os.environ, **base_env(cfg)}
    values = {
        "python": sys.executable,
        "release": "working-tree",
        "release_dir": cfg.root,
        "colour": "-",
    }
    with contextlib.ExitStack() as stack:
        if not every and cfg.database is not None:
            env[cfg.database.env] = stack.enter_context(_database_for_command(cfg, env, values))
        argv = mig.plan.render(**values) + (["--from", "base"] if every else [])
        out = subprocess.run(
            argv, cwd=cfg.root, env=env, capture_output=True, text=True, check=False
        )
    if out.returncode != 0:
        _fail(f"the plan command failed: {out.stderr.strip() or out.stdout.strip()}")
    try:
        plan = Plan.from_json(out.stdout)
    except BluegreenError as exc:
        _fail(exc.message)
    squawk_cfg = cfg.root / mig.squawk_config
    findings = lint(
        plan,
        squawk_executable=squawk_executable(),
        squawk_config=squawk_cfg if squawk_cfg.is_file() else None,
    )
    refusals = []
    if cfg.state.db_path.exists() and not every:
        with StateStore(cfg.state.db_path) as state:
            cur = state.current()
            heads = [
                ReleaseHead(r.id, r.migration_head, "live" if r.id == cur.live_release else "kept")
                for r in state.releases()
                if r.path.is_dir()
            ]
        refusals = check_contracts(plan, heads)
    revisions = ", ".join(f"{m.revision} ({m.phase})" for m in plan.revisions) or "none"
    console.print(f"migrations checked: {revisions}")
    for f in findings:
        console.print(f.render(), markup=False, highlight=False)
    for r in refusals:
        console.print(r.render(), markup=False, highlight=False)
    if findings or refusals:
        err.print(f"[red]✘ {len(findings) + len(refusals)} problem(s)[/red]")
        raise typer.Exit(1)
    console.print("[green]✔ clean[/green]")


@app.command()
def status(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """What is live, the instances and their health, the running deploy."""
    st = Api(_config(ctx)).call("GET", "/api/status")
    if as_json:
        print(json.dumps(st, indent=2))
    else:
        _print_status(st)


@app.command()
def history(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 20,
) -> None:
    """Deployment history, newest first."""
    deploys = Api(_config(ctx)).call("GET", f"/api/deploys?limit={limit}")
    if as_json:
        print(json.dumps(deploys, indent=2))
        return
    table = Table("#", "release", "source", "status", "started", "seconds", "error")
    for d in deploys:
        table.add_row(
            str(d["id"]),
            d["release_id"],
            d["source"],
            d["status"],
            d["started_at"][:19],
            "" if d["duration_s"] is None else f"{d['duration_s']:.1f}",
            escape((d["error"] or "")[:80]),
        )
    console.print(table)


@app.command()
def pause(ctx: typer.Context) -> None:
    """Hold incoming requests (released by `resume`)."""
    console.print(f"mode: {Api(_config(ctx)).call('POST', '/api/pause')['mode']}")


@app.command()
def resume(ctx: typer.Context) -> None:
    """Serve again after `pause` or maintenance."""
    console.print(f"mode: {Api(_config(ctx)).call('POST', '/api/resume')['mode']}")


@app.command()
def maintenance(
    ctx: typer.Context, state: Annotated[str, typer.Argument(help="on or off")]
) -> None:
    """Show the maintenance page on the public listener (on) or serve again (off)."""
    if state not in ("on", "off"):
        _fail("maintenance takes `on` or `off`", 2)
    answer = Api(_config(ctx)).call("POST", "/api/maintenance", {"on": state == "on"})
    console.print(f"mode: {answer['mode']}")


@app.command()
def logs(
    ctx: typer.Context,
    instance: Annotated[str | None, typer.Argument(help="Instance id (default: all).")] = None,
    lines: Annotated[int, typer.Option("--lines", "-n", min=1)] = 50,
) -> None:
    """The last output lines of an instance (or of every instance)."""
    api = Api(_config(ctx))
    ids = (
        [instance]
        if instance is not None
        else [i["id"] for i in api.call("GET", "/api/status")["instances"]]
    )
    for iid in ids:
        out = api.call("GET", f"/api/logs/{iid}?lines={lines}")
        for line in out["lines"]:
            print(f"{iid} | {line}")


dataplane_app = typer.Typer(help="The data plane (Envoy).", no_args_is_help=True)
app.add_typer(dataplane_app, name="dataplane")


@dataplane_app.command("restart")
def dataplane_restart(ctx: typer.Context) -> None:
    """Hot-restart Envoy (after a bootstrap change or an upgrade of the envoy wheel): the new
    Envoy takes over the listening sockets, no connection is refused."""
    answer = Api(_config(ctx), timeout=120).call("POST", "/api/dataplane/restart")
    console.print(f"{answer['message']} ({answer['seconds']:.2f}s)")


from bluegreen.kubernetes.cli import rehearse, render_app  # noqa: E402 (commands of its own)

app.add_typer(render_app, name="render")
app.command("rehearse")(rehearse)


def _invoke(argv: list[str] | None) -> object:
    try:
        return app(args=argv, standalone_mode=False, prog_name="bluegreen")
    finally:
        for client in getattr(_local, "clients", []):
            client.close()
        _local.clients = []


def main(argv: list[str] | None = None) -> int:
    """Entry point: the exit code (0 ok, 1 operation failed, 2 bad usage/config)."""
    import click

    try:
        rv = _invoke(argv)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return 2
    except click.exceptions.Abort:
        return 1
    except BluegreenError as exc:
        err.print(f"error: {exc.message}", markup=False)
        return exc.exit_code
    return int(rv) if isinstance(rv, int) else 0
