"""Admin API and dashboard of the bluegreen daemon (aiohttp.web).

Promises:

* every endpoint but ``/login`` needs the admin token: ``Authorization: Bearer <token>``
  or the session cookie the login form sets, which expires and which logout revokes;
  tokens are compared in constant time and never echoed (:mod:`bluegreen.adminauth`);
* every error is a :class:`~bluegreen.errors.BluegreenError` answered with its own HTTP
  status and the one JSON shape ``{"error": {"code": <code>, "message": <text>}}``; a deploy
  refused because another one runs is a 409 whose message names the running deploy;
* a write made with the cookie is refused (403) unless it comes from this site (``Origin``,
  ``Sec-Fetch-Site``) and carries the session's CSRF token (form field or
  ``X-CSRF-Token``); the login form is refused from another site too.

Endpoints (JSON unless noted):

=======  ==========================  ====================================================
GET      /api/status                 live colour/release, mode, instances, running deploy,
                                     ``warm``: old colour kept for rollback, and until when;
                                     ``weights``: share of new sessions per colour while a
                                     phased switch splits them (else null), ``switch_steps``
GET      /api/deploys?limit=N        deployment history, newest first, with steps
GET      /api/deploys/{id}           one deploy with its steps
POST     /api/deploys                ``{"ref"?, "path"?, "manual"?}`` → 202 ``{"deploy_id"}``
POST     /api/promote                approve the manual deploy waiting in "approve", or
                                     skip a phased switch's remaining steps
POST     /api/rollback               back to the previous release
POST     /api/pause | /api/resume    hold requests / serve again
POST     /api/maintenance            ``{"on": true|false}``
GET      /api/logs/{instance}?lines  the instance's last output lines
POST     /api/shutdown               stop the daemon (and everything it started)
POST     /api/dataplane/restart      Envoy hot restart (new bootstrap; sockets handed over)
GET      /metrics                    per-colour traffic (from the data plane), Prometheus text
GET      /                           dashboard (HTML)
=======  ==========================  ====================================================
"""

from __future__ import annotations

import html
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

from bluegreen.adminauth import (
    COOKIE,
    SAFE_METHODS,
    Session,
    Sessions,
    bearer_ok,
    csrf_ok,
    same_origin,
    tokens_equal,
)
from bluegreen.config import COLOURS, Config
from bluegreen.controller import Controller, DeployRequest
from bluegreen.dataplane.table import Mode
from bluegreen.errors import BadRequest, BluegreenError, Forbidden, NotFound, Unauthorised
from bluegreen.state import Deploy, StateStore
from bluegreen.steps import ControlPlane
from bluegreen.summary import weights_line
from bluegreen.traffic import render_prometheus

JSON_LIMIT = 64 * 1024
CHART_SECONDS = 300


@dataclass(slots=True)
class AdminContext:
    """What the admin API operates on."""

    config: Config
    token: str
    controller: Controller
    urls: dict[str, str]
    shutdown: Callable[[], None]
    sessions: Sessions = field(default_factory=Sessions)

    @property
    def plane(self) -> ControlPlane:
        return self.controller.plane

    @property
    def state(self) -> StateStore:
        return self.controller.state


_CTX: web.AppKey[AdminContext] = web.AppKey("bluegreen_admin", AdminContext)


_SESSION: web.RequestKey[Session] = web.RequestKey("bluegreen_session", Session)


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The one place errors become answers: each with its own status, one JSON shape."""
    try:
        return await handler(request)
    except BluegreenError as exc:
        return web.json_response(exc.body(), status=exc.status)


@web.middleware
async def _auth(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The one place access is decided: the bearer token, or a live session whose writes
    come from this site with its CSRF token."""
    ctx = request.app[_CTX]
    if request.path == "/login":
        if request.method == "POST" and not same_origin(request):
            raise Forbidden("cross-site login refused")
        return await handler(request)
    if bearer_ok(request, ctx.token):
        return await handler(request)
    session = ctx.sessions.get(request.cookies.get(COOKIE, ""))
    if session is None:
        if request.path.startswith("/api/") or request.path == "/metrics":
            raise Unauthorised("missing or wrong admin token (Authorization: Bearer)")
        raise web.HTTPSeeOther("/login")
    if request.method not in SAFE_METHODS:
        if not same_origin(request):
            raise Forbidden("cross-site request refused (Origin is not this dashboard)")
        if not await csrf_ok(request, session):
            raise Forbidden("missing or wrong CSRF token")
    request[_SESSION] = session
    return await handler(request)


def make_app(ctx: AdminContext) -> web.Application:
    """The admin aiohttp application for ``ctx``."""
    app = web.Application(middlewares=[_errors, _auth], client_max_size=JSON_LIMIT)
    app[_CTX] = ctx
    r = app.router
    r.add_get("/api/status", api_status)
    r.add_get("/api/deploys", api_history)
    r.add_get("/api/deploys/{id:\\d+}", api_deploy)
    r.add_post("/api/deploys", api_start_deploy)
    r.add_post("/api/promote", api_promote)
    r.add_post("/api/rollback", api_rollback)
    r.add_post("/api/pause", api_pause)
    r.add_post("/api/resume", api_resume)
    r.add_post("/api/maintenance", api_maintenance)
    r.add_get("/api/logs/{instance}", api_logs)
    r.add_post("/api/shutdown", api_shutdown)
    r.add_post("/api/dataplane/restart", api_dataplane_restart)
    r.add_get("/metrics", metrics)
    r.add_get("/", dashboard)
    r.add_get("/login", login_form)
    r.add_post("/login", login)
    r.add_get("/logout", logout_form)
    r.add_post("/logout", logout)
    r.add_post("/ui/{action:promote|rollback}", ui_action)
    return app


# --------------------------------------------------------------------------- JSON views


def _ts(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _duration(start: datetime, end: datetime | None) -> float | None:
    return None if end is None else round((end - start).total_seconds(), 3)


def deploy_json(d: Deploy) -> dict[str, Any]:
    """A deploy and its steps as JSON."""
    return {
        "id": d.id,
        "release_id": d.release_id,
        "source": d.source,
        "status": d.status,
        "started_at": _ts(d.started_at),
        "finished_at": _ts(d.finished_at),
        "duration_s": _duration(d.started_at, d.finished_at),
        "error": d.error,
        "manual": d.manual,
        "steps": [
            {
                "name": s.name,
                "status": s.status,
                "started_at": _ts(s.started_at),
                "finished_at": _ts(s.finished_at),
                "duration_s": _duration(s.started_at, s.finished_at),
                "output": s.output,
            }
            for s in d.steps
        ],
    }


def status_json(ctx: AdminContext) -> dict[str, Any]:
    """What ``GET /api/status`` answers."""
    cur = ctx.state.current()
    table = ctx.plane.dataplane.table
    running = ctx.state.running_deploy()
    rates: dict[str, dict[str, float]] = {}
    for colour in COLOURS:
        rps, eps = ctx.plane.traffic.rates(colour, 60.0)
        rates[colour] = {
            "requests_per_s": round(rps, 2),
            "errors_5xx_per_s": round(eps, 2),
            "error_rate": round(eps / rps, 4) if rps else 0.0,
        }
    split = table.split()
    return {
        "app": ctx.config.app.name,
        "live_colour": cur.live_colour,
        "live_release": cur.live_release,
        "previous_release": cur.previous_release,
        "colours": cur.colours,
        "preview_colour": table.preview_colour(),
        "mode": table.mode,
        "running_deploy": None if running is None else deploy_json(running),
        "warm": _warm(ctx, running, cur.live_colour, cur.previous_release),
        "awaiting_approval": _running_step(running) == "approve",
        "in_phases": _running_step(running) == "phases",
        # Share of NEW sessions per colour while a phased switch splits them (None: atomic).
        "weights": None if split is None else {split[0]: split[2], split[1]: 100 - split[2]},
        "switch_steps": list(ctx.config.switch.steps),
        "instances": [
            {
                "id": i.id,
                "colour": i.colour,
                "release": i.release.id,
                "pid": i.pid,
                "port": i.port,
                "state": i.state,
                "healthy": i.healthy,
                "restarts": i.restarts,
                "live": i.colour == table.live,
            }
            for i in ctx.plane.supervisor.instances()
        ],
        "rates_last_minute": rates,
        "urls": ctx.urls,
    }


def _running_step(running: Deploy | None) -> str | None:
    step = running.running_step() if running is not None else None
    return None if step is None else step.name


def _warm(
    ctx: AdminContext, running: Deploy | None, live: str | None, previous: str | None
) -> dict[str, str | None] | None:
    """While a deploy only keeps the old colour warm (its ``retire`` step): which colour,
    and until when a rollback is instant."""
    step = running.running_step() if running is not None else None
    if step is None or step.name != "retire" or live is None:
        return None
    until = step.started_at + timedelta(seconds=ctx.config.timeouts.scale_down_delay)
    old = next(c for c in COLOURS if c != live)
    return {"colour": old, "release": previous, "until": until.isoformat()}


async def _json_body(request: web.Request) -> dict[str, Any]:
    if not request.body_exists:
        return {}
    try:
        data = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("body must be JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    return data


async def api_status(request: web.Request) -> web.Response:
    return web.json_response(status_json(request.app[_CTX]))


async def api_history(request: web.Request) -> web.Response:
    try:
        limit = max(1, min(500, int(request.query.get("limit", "20"))))
    except ValueError:
        raise BadRequest("limit must be an integer") from None
    return web.json_response([deploy_json(d) for d in request.app[_CTX].state.history(limit)])


async def api_deploy(request: web.Request) -> web.Response:
    d = request.app[_CTX].state.deploy(int(request.match_info["id"]))
    if d is None:
        raise NotFound(f"no deploy #{request.match_info['id']}")
    return web.json_response(deploy_json(d))


async def api_start_deploy(request: web.Request) -> web.Response:
    ctx = request.app[_CTX]
    body = await _json_body(request)
    ref, path, manual, env = (
        body.get("ref"),
        body.get("path"),
        body.get("manual", False),
        body.get("env", {}),
    )
    if ref is not None and not isinstance(ref, str):
        raise BadRequest("ref must be a string")
    if path is not None and (not isinstance(path, str) or not Path(path).is_absolute()):
        raise BadRequest("path must be an absolute directory path")
    if ref is not None and path is not None:
        raise BadRequest("give either ref or path, not both")
    if path is not None and not Path(path).is_dir():  # noqa: ASYNC240 - one stat call
        raise BadRequest(f"{path}: not a directory")
    if not isinstance(manual, bool):
        raise BadRequest("manual must be a boolean")
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env.items()
    ):
        raise BadRequest("env must be an object of strings")
    deploy_id = await ctx.controller.start_deploy(
        DeployRequest(ref=ref, path=Path(path) if path else None, manual=manual, env=env)
    )
    return web.json_response({"deploy_id": deploy_id}, status=202)


async def api_promote(request: web.Request) -> web.Response:
    deploy_id = await request.app[_CTX].controller.promote()
    return web.json_response({"deploy_id": deploy_id, "message": f"deploy #{deploy_id} promoted"})


async def api_rollback(request: web.Request) -> web.Response:
    started = time.monotonic()
    deploy_id, message = await request.app[_CTX].controller.rollback()
    return web.json_response(
        {
            "deploy_id": deploy_id,
            "message": message,
            "seconds": round(time.monotonic() - started, 3),
        }
    )


async def api_pause(request: web.Request) -> web.Response:
    await request.app[_CTX].controller.set_mode("paused")
    return web.json_response({"mode": "paused"})


async def api_resume(request: web.Request) -> web.Response:
    await request.app[_CTX].controller.set_mode("serving")
    return web.json_response({"mode": "serving"})


async def api_maintenance(request: web.Request) -> web.Response:
    body = await _json_body(request)
    on = body.get("on")
    if not isinstance(on, bool):
        raise BadRequest('body must be {"on": true} or {"on": false}')
    mode: Mode = "maintenance" if on else "serving"
    await request.app[_CTX].controller.set_mode(mode)
    return web.json_response({"mode": mode})


async def api_logs(request: web.Request) -> web.Response:
    ctx = request.app[_CTX]
    wanted = request.match_info["instance"]
    inst = next((i for i in ctx.plane.supervisor.instances() if i.id == wanted), None)
    if inst is None:
        known = ", ".join(i.id for i in ctx.plane.supervisor.instances()) or "none"
        raise NotFound(f"no instance {wanted}; {known}")
    try:
        lines = int(request.query.get("lines", "100"))
    except ValueError:
        raise BadRequest("lines must be an integer") from None
    return web.json_response({"instance": inst.id, "lines": inst.logs(lines)})


async def api_dataplane_restart(request: web.Request) -> web.Response:
    ctx = request.app[_CTX]
    started = time.monotonic()
    pid = await ctx.controller.hot_restart_dataplane()
    return web.json_response(
        {
            "pid": pid,
            "message": f"envoy hot restarted (pid {pid}); listening sockets handed over",
            "seconds": round(time.monotonic() - started, 3),
        }
    )


async def api_shutdown(request: web.Request) -> web.Response:
    request.app[_CTX].shutdown()
    return web.json_response({"message": "shutting down"}, status=202)


async def metrics(request: web.Request) -> web.Response:
    text = render_prometheus(request.app[_CTX].plane.traffic.latest)
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


# --------------------------------------------------------------------------- dashboard

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem auto;max-width:70rem;padding:0 1rem;
color:#222}h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.6rem}
table{border-collapse:collapse;width:100%;font-size:.9rem}td,th{border-bottom:1px solid #ddd;
padding:.3rem .5rem;text-align:left;vertical-align:top}.blue{color:#1f5fbf}.green{color:#1c8a3a}
.ok{color:#1c8a3a}.failed,.rolled_back,.aborted{color:#b3261e}.running{color:#a86b00}
.badge{display:inline-block;padding:.1rem .5rem;border-radius:.3rem;color:#fff}
.bg-blue{background:#1f5fbf}.bg-green{background:#1c8a3a}
form.inline{display:inline}button{padding:.3rem .8rem;margin-right:.5rem}
pre{white-space:pre-wrap;max-height:8rem;overflow:auto;margin:.2rem 0;font-size:.8rem}
"""


def _page(title: str, body: str, *, refresh: bool = False) -> web.Response:
    meta = '<meta http-equiv="refresh" content="5">' if refresh else ""
    text = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">{meta}'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body>{body}</body></html>"
    )
    return web.Response(text=text, content_type="text/html", charset="utf-8")


def svg_chart(series: dict[str, list[tuple[int, int, int]]], now: int, seconds: int) -> str:
    """An inline SVG: requests/s (solid) and 5xx/s (dashed) per colour over ``seconds``."""
    width, height, pad = 720, 180, 30
    start = now - seconds
    peak = max(
        [1] + [r for points in series.values() for s, r, _ in points if s >= start],
    )
    colours = {"blue": "#1f5fbf", "green": "#1c8a3a"}

    def xy(second: int, value: int) -> str:
        x = pad + (second - start) / seconds * (width - 2 * pad)
        y = height - pad - value / peak * (height - 2 * pad)
        return f"{x:.1f},{y:.1f}"

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="requests per second by colour">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fafafa"/>',
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" '
        'stroke="#999"/>',
        f'<text x="4" y="{pad}" font-size="11">{peak}/s</text>',
        f'<text x="4" y="{height - pad}" font-size="11">0</text>',
        f'<text x="{pad}" y="{height - 8}" font-size="11">-{seconds // 60} min</text>',
        f'<text x="{width - pad - 20}" y="{height - 8}" font-size="11">now</text>',
    ]
    for colour, points in series.items():
        by_second = {s: (r, e) for s, r, e in points}
        seconds_range = range(start, now + 1)
        reqs = " ".join(xy(s, by_second.get(s, (0, 0))[0]) for s in seconds_range)
        errs = " ".join(xy(s, by_second.get(s, (0, 0))[1]) for s in seconds_range)
        stroke = colours.get(colour, "#444")
        parts.append(
            f'<polyline fill="none" stroke="{stroke}" stroke-width="1.5" points="{reqs}">'
            f"<title>{colour} requests/s</title></polyline>"
        )
        parts.append(
            f'<polyline fill="none" stroke="#b3261e" stroke-dasharray="4 3" stroke-width="1" '
            f'points="{errs}"><title>{colour} 5xx/s</title></polyline>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value))


async def dashboard(request: web.Request) -> web.Response:
    ctx = request.app[_CTX]
    st = status_json(ctx)
    session = request.get(_SESSION)
    csrf = session.csrf if session is not None else ""
    live = st["live_colour"]
    badge = f'<span class="badge bg-{_e(live)}">{_e(live)}</span>' if live else "nothing live"
    rows = "".join(
        f'<tr><td>{_e(i["id"])}</td><td class="{_e(i["colour"])}">{_e(i["colour"])}'
        f"{' (live)' if i['live'] else ''}</td><td>{_e(i['release'])}</td><td>{_e(i['pid'])}</td>"
        f"<td>{_e(i['port'])}</td><td>{_e(i['state'])}</td>"
        f'<td class="{"ok" if i["healthy"] else "failed"}">'
        f"{'healthy' if i['healthy'] else 'unhealthy'}</td><td>{_e(i['restarts'])}</td></tr>"
        for i in st["instances"]
    )
    now = int(time.time())
    chart = svg_chart(
        {c: ctx.plane.traffic.series(c, CHART_SECONDS) for c in COLOURS}, now, CHART_SECONDS
    )
    rates = " · ".join(
        f'<span class="{c}">{c}: {r["requests_per_s"]} req/s, error rate '
        f"{r['error_rate']:.2%} ({r['errors_5xx_per_s']} 5xx/s)</span>"
        for c, r in st["rates_last_minute"].items()
    )
    history = []
    for d in ctx.state.history(15):
        steps = "".join(
            f'<li><span class="{_e(s.status)}">{_e(s.name)}: {_e(s.status)}</span>'
            + (f" ({_duration(s.started_at, s.finished_at)}s)" if s.finished_at is not None else "")
            + (f"<pre>{_e(s.output[-2000:])}</pre>" if s.output else "")
            + "</li>"
            for s in d.steps
        )
        history.append(
            f"<tr><td>#{d.id}</td><td>{_e(d.release_id)}<br><small>{_e(d.source)}</small></td>"
            f'<td class="{_e(d.status)}">{_e(d.status)}</td><td>{_e(_ts(d.started_at))}</td>'
            f"<td>{_e(_duration(d.started_at, d.finished_at))}</td>"
            f"<td>{_e(d.error or '')}<details><summary>steps</summary><ul>{steps}</ul>"
            f"</details></td></tr>"
        )
    buttons = (
        f'<form class="inline" method="post" action="/ui/promote">'
        f'<input type="hidden" name="csrf" value="{csrf}"><button'
        f"{'' if st['awaiting_approval'] or st['in_phases'] else ' disabled'}>Promote"
        f"</button></form>"
        f'<form class="inline" method="post" action="/ui/rollback">'
        f'<input type="hidden" name="csrf" value="{csrf}"><button>Roll back</button></form>'
        f'<form class="inline" method="post" action="/logout">'
        f'<input type="hidden" name="csrf" value="{csrf}"><button>Log out</button></form>'
    )
    phased = weights_line(st)
    flash = request.query.get("msg", "")
    body = (
        f"<h1>{_e(st['app'])} — bluegreen</h1>"
        + (f"<p><strong>{_e(flash)}</strong></p>" if flash else "")
        + f"<p>Live: {badge} release <code>{_e(st['live_release'])}</code>; previous "
        f"<code>{_e(st['previous_release'])}</code>; mode <strong>{_e(st['mode'])}</strong>; "
        f"public <code>{_e(st['urls'].get('public'))}</code></p>"
        + (f'<p class="weights"><strong>{_e(phased)}</strong></p>' if phased else "")
        + f"<p>{buttons}</p>"
        f"<h2>Instances</h2><table><tr><th>id</th><th>colour</th><th>release</th><th>pid</th>"
        f"<th>port</th><th>state</th><th>health</th><th>restarts</th></tr>{rows}</table>"
        f"<h2>Traffic (last {CHART_SECONDS // 60} minutes)</h2><p>{rates}</p>{chart}"
        f"<h2>Deployments</h2><table><tr><th>#</th><th>release</th><th>status</th>"
        f"<th>started</th><th>seconds</th><th>details</th></tr>{''.join(history)}</table>"
    )
    return _page(f"{st['app']} — bluegreen", body, refresh=True)


async def login_form(request: web.Request) -> web.Response:
    failed = request.query.get("failed") == "1"
    body = (
        "<h1>bluegreen admin</h1>"
        + ('<p class="failed">Wrong token.</p>' if failed else "")
        + '<form method="post" action="/login"><label>Admin token '
        '<input type="password" name="token" autocomplete="current-password" autofocus>'
        "</label> <button>Log in</button></form>"
    )
    return _page("bluegreen login", body)


async def login(request: web.Request) -> web.Response:
    ctx = request.app[_CTX]
    form = await request.post()
    given = str(form.get("token", "")).strip()
    if not tokens_equal(given, ctx.token):
        raise web.HTTPSeeOther("/login?failed=1")
    resp = web.HTTPSeeOther("/")
    resp.set_cookie(
        COOKIE,
        ctx.sessions.open(),
        httponly=True,
        samesite="Strict",
        path="/",
        max_age=int(ctx.sessions.ttl),
    )
    raise resp


async def logout_form(request: web.Request) -> web.Response:
    session = request[_SESSION]
    body = (
        "<h1>bluegreen admin</h1>"
        '<form method="post" action="/logout">'
        f'<input type="hidden" name="csrf" value="{_e(session.csrf)}">'
        "<button>Log out</button></form>"
    )
    return _page("bluegreen logout", body)


async def logout(request: web.Request) -> web.Response:
    # The middleware checked the CSRF token; the session ends here, not only the cookie.
    request.app[_CTX].sessions.revoke(request.cookies.get(COOKIE, ""))
    resp = web.HTTPSeeOther("/login")
    resp.del_cookie(COOKIE, path="/")
    raise resp


async def ui_action(request: web.Request) -> web.Response:
    ctx = request.app[_CTX]  # the middleware checked the origin and the CSRF token
    try:
        if request.match_info["action"] == "promote":
            deploy_id = await ctx.controller.promote()
            msg = f"deploy #{deploy_id} promoted"
        else:
            _, msg = await ctx.controller.rollback()
    except BluegreenError as exc:
        msg = exc.message
    raise web.HTTPSeeOther(f"/?{_query({'msg': msg})}")


def _query(params: dict[str, str]) -> str:
    from urllib.parse import urlencode

    return urlencode(params)
