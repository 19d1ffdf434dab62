"""Benchmark of the bluegreen router: overhead versus a direct connection, and switch time.

Run ``.venv/bin/python bench/router.py``. Every role runs in its own process so the load
generator, the router and the upstreams never share an event loop; this one file plays
all of them (``_upstream``, ``_router``, ``_load`` sub-commands are internal).

Phases:
1. direct: load generator -> blue upstream, for ``--duration`` seconds;
2. router: load generator -> router -> the same blue upstream;
3. switch: load through the router while the router process is told 20 times to swap
   the live colour; it reports the time from ``swap()`` to the first response served by
   the new colour (the backend that ``X-Served-By`` names). The load generator counts
   failed requests (connection errors or 5xx) during this phase.

The last line printed is one JSON object with the results.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
SRC = HERE.parent.parent / "src"
PY = sys.executable
VAR_DIR = Path(tempfile.gettempdir()) / "bench-router-var"


# -- process plumbing -----------------------------------------------------------------


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop when it is installed, else on the default loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_upstream(
    port: int, *, kind: str = "clinic", name: str = "blue-1", db_url: str | None = None
) -> subprocess.Popen[str]:
    """Start one app instance listening on 127.0.0.1:``port``.

    ``clinic``: the real app (``python -m clinic serve``) on the bench's own database.
    ``tiny``: a small aiohttp app answering ``GET /version``, to see the router alone.
    """
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    if kind == "tiny":
        cmd = [PY, str(HERE), "_upstream", "--port", str(port), "--name", name]
    elif kind == "clinic":
        from harness import clinic_env

        assert db_url is not None
        cmd = [PY, "-m", "clinic", "serve", "--port", str(port)]
        env.update(clinic_env(db_url, VAR_DIR), BLUEGREEN_COLOR=name.split("-")[0])
    else:
        raise ValueError(f"unknown upstream kind {kind!r}")
    return subprocess.Popen(
        cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, text=True
    )


def wait_listening(port: int, proc: subprocess.Popen[str], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on port {port} after {timeout}s")


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def run_load(url: str, conns: int, duration: float, warmup: float) -> dict[str, Any]:
    cmd = [PY, str(HERE), "_load", "--url", url, "--conns", str(conns)]
    cmd += ["--duration", str(duration), "--warmup", str(warmup)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + warmup + 60)
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed: {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# -- role: tiny upstream ----------------------------------------------------------------


async def upstream_main(port: int, name: str) -> None:
    from aiohttp import web

    body = json.dumps({"version": "bench", "instance": name}).encode()

    async def version(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/version", version)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


# -- role: router -----------------------------------------------------------------------


async def router_main(blue: int, green: int | None) -> None:
    """Router process. Prints ``READY <port>``, then obeys stdin lines:
    ``switch <colour>`` -> ``SWITCHED <colour> <ms>``; ``quit`` -> exits."""
    sys.path.insert(0, str(SRC))
    from bluegreen.dataplane.table import Colour
    from bluegreen.router import Backend, Router, RouterMetrics, RoutingTable

    class SwitchTimer(RouterMetrics):
        """Metrics that also note when the first response of a colour is observed."""

        def __init__(self) -> None:
            super().__init__()
            self.waiting_for: Colour | None = None
            self.seen = asyncio.Event()

        def observe(
            self,
            colour: Colour,
            backend_id: str | None,
            status: int,
            seconds: float,
            *,
            router_error: bool = False,
        ) -> None:
            super().observe(colour, backend_id, status, seconds, router_error=router_error)
            if colour == self.waiting_for and backend_id is not None:
                self.waiting_for = None
                self.seen.set()

    backends = [Backend("blue-1", "blue", "127.0.0.1", blue)]
    if green is not None:
        backends.append(Backend("green-1", "green", "127.0.0.1", green))
    router = Router(public=("127.0.0.1", 0), preview=None)
    timer = SwitchTimer()
    router.metrics = timer
    router.swap(RoutingTable(live="blue", preview=None, backends=tuple(backends)))
    await router.start()
    print(f"READY {router.public_port}", flush=True)

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := (await reader.readline()).decode().strip():
            cmd, _, arg = line.partition(" ")
            if cmd == "quit":
                break
            if cmd == "switch" and arg in ("blue", "green"):
                colour: Colour = "blue" if arg == "blue" else "green"
                timer.seen.clear()
                timer.waiting_for = colour
                t0 = time.perf_counter()
                router.swap(router.table.with_live(colour))
                try:
                    await asyncio.wait_for(timer.seen.wait(), 5.0)
                    ms = (time.perf_counter() - t0) * 1000
                except TimeoutError:
                    ms = float("nan")
                print(f"SWITCHED {colour} {ms:.4f}", flush=True)
            elif cmd == "metrics":
                snap = router.metrics.snapshot("blue")
                print(f"METRICS {snap.requests}", flush=True)
    finally:
        await router.stop()


# -- role: load generator ---------------------------------------------------------------


async def load_main(url: str, conns: int, duration: float, warmup: float) -> None:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    served: dict[str, int] = {}
    measuring = False
    stop_at = time.perf_counter() + warmup + duration

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while (now := time.perf_counter()) < stop_at:
            try:
                async with session.get(url) as resp:
                    await resp.read()
                    ok = resp.status < 500
                    by = resp.headers.get("X-Served-By", "direct")
            except (aiohttp.ClientError, OSError):
                ok, by = False, "error"
            if measuring:
                latencies.append(time.perf_counter() - now)
                served[by] = served.get(by, 0) + 1
                if not ok:
                    errors += 1

    connector = aiohttp.TCPConnector(limit=conns)
    async with aiohttp.ClientSession(connector=connector) as session:
        workers = [asyncio.create_task(worker(session)) for _ in range(conns)]
        await asyncio.sleep(warmup)
        measuring = True
        started = time.perf_counter()
        await asyncio.gather(*workers)
        elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(q: float) -> float:
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    print(
        json.dumps(
            {
                "requests": len(latencies),
                "errors": errors,
                "rps": len(latencies) / elapsed,
                "p50_ms": pct(0.50),
                "p99_ms": pct(0.99),
                "served_by": served,
            }
        ),
        flush=True,
    )


# -- orchestration ----------------------------------------------------------------------


def bench(args: argparse.Namespace) -> dict[str, Any]:
    if args.upstream == "clinic":
        from harness import database

        with database() as url:
            return _bench(args, url)
    return _bench(args, None)


def _bench(args: argparse.Namespace, db_url: str | None) -> dict[str, Any]:
    procs: list[subprocess.Popen[str]] = []
    try:
        blue_port, green_port = free_port(), free_port()
        blue = start_upstream(blue_port, kind=args.upstream, name="blue-1", db_url=db_url)
        procs.append(blue)
        green = start_upstream(green_port, kind=args.upstream, name="green-1", db_url=db_url)
        procs.append(green)
        wait_listening(blue_port, blue)
        wait_listening(green_port, green)

        router = subprocess.Popen(
            [PY, str(HERE), "_router", "--blue", str(blue_port), "--green", str(green_port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        procs.append(router)
        assert router.stdin is not None and router.stdout is not None
        ready = router.stdout.readline().split()
        if not ready or ready[0] != "READY":
            raise RuntimeError(f"router did not start: {ready}")
        router_port = int(ready[1])
        path = args.path

        print(f"upstream={args.upstream} conns={args.conns} duration={args.duration}s", flush=True)
        direct = run_load(
            f"http://127.0.0.1:{blue_port}{path}", args.conns, args.duration, args.warmup
        )
        print(
            f"direct : {direct['rps']:9.0f} req/s  p50 {direct['p50_ms']:.2f} ms  "
            f"p99 {direct['p99_ms']:.2f} ms  errors {direct['errors']}",
            flush=True,
        )
        routed = run_load(
            f"http://127.0.0.1:{router_port}{path}", args.conns, args.duration, args.warmup
        )
        print(
            f"router : {routed['rps']:9.0f} req/s  p50 {routed['p50_ms']:.2f} ms  "
            f"p99 {routed['p99_ms']:.2f} ms  errors {routed['errors']}",
            flush=True,
        )

        # Switch phase: load in the background, 20 swaps from the router's control stdin.
        switch_duration = args.switches * args.switch_interval + 2.0
        load = subprocess.Popen(
            [
                PY,
                str(HERE),
                "_load",
                "--url",
                f"http://127.0.0.1:{router_port}{path}",
                "--conns",
                str(args.conns),
                "--duration",
                str(switch_duration),
                "--warmup",
                "0.5",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(load)
        time.sleep(1.0)
        switch_ms: list[float] = []
        colour = "blue"
        for _ in range(args.switches):
            colour = "green" if colour == "blue" else "blue"
            router.stdin.write(f"switch {colour}\n")
            router.stdin.flush()
            reply = router.stdout.readline().split()
            switch_ms.append(float(reply[2]))
            time.sleep(args.switch_interval)
        out, _ = load.communicate(timeout=switch_duration + 60)
        under_switch = json.loads(out.strip().splitlines()[-1])
        print(
            f"switch : median {statistics.median(switch_ms):.3f} ms over {len(switch_ms)} swaps "
            f"(min {min(switch_ms):.3f}, max {max(switch_ms):.3f}); "
            f"{under_switch['requests']} requests during swaps, {under_switch['errors']} failed, "
            f"served_by {under_switch['served_by']}",
            flush=True,
        )
        router.stdin.write("quit\n")
        router.stdin.flush()
        router.wait(10)
    finally:
        for proc in reversed(procs):
            stop(proc)

    return {
        "upstream": args.upstream,
        "conns": args.conns,
        "duration_s": args.duration,
        "direct_rps": round(direct["rps"], 1),
        "router_rps": round(routed["rps"], 1),
        "ratio": round(routed["rps"] / direct["rps"], 3),
        "direct_p50_ms": round(direct["p50_ms"], 3),
        "direct_p99_ms": round(direct["p99_ms"], 3),
        "router_p50_ms": round(routed["p50_ms"], 3),
        "router_p99_ms": round(routed["p99_ms"], 3),
        "p99_added_ms": round(routed["p99_ms"] - direct["p99_ms"], 3),
        "switch_ms": round(statistics.median(switch_ms), 4),
        "switches": len(switch_ms),
        "failed": under_switch["errors"] + direct["errors"] + routed["errors"],
        "failed_during_switches": under_switch["errors"],
        "cpus": os.cpu_count(),
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        role, rest = sys.argv[1], sys.argv[2:]
        p = argparse.ArgumentParser(prog=f"router.py {role}")
        if role == "_upstream":
            p.add_argument("--port", type=int, required=True)
            p.add_argument("--name", default="blue-1")
            a = p.parse_args(rest)
            with contextlib.suppress(KeyboardInterrupt):
                run_loop(upstream_main(a.port, a.name))
        elif role == "_router":
            p.add_argument("--blue", type=int, required=True)
            p.add_argument("--green", type=int)
            a = p.parse_args(rest)
            run_loop(router_main(a.blue, a.green))
        elif role == "_load":
            p.add_argument("--url", required=True)
            p.add_argument("--conns", type=int, default=64)
            p.add_argument("--duration", type=float, default=10.0)
            p.add_argument("--warmup", type=float, default=1.0)
            a = p.parse_args(rest)
            run_loop(load_main(a.url, a.conns, a.duration, a.warmup))
        else:
            raise SystemExit(f"unknown role {role}")
        return

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--upstream",
        choices=("clinic", "tiny"),
        default="clinic",
        help="clinic: one real clinic instance per colour; tiny: a minimal aiohttp app",
    )
    p.add_argument("--path", default="/version", help="path the load generator requests")
    p.add_argument("--conns", type=int, default=64, help="concurrent keep-alive connections")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--switches", type=int, default=20)
    p.add_argument("--switch-interval", type=float, default=0.25)
    args = p.parse_args()
    result = bench(args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
