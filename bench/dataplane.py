"""Benchmark of the Envoy data plane: overhead versus a direct connection, and switch time.

Run ``.venv/bin/python bench/dataplane.py``. One real clinic instance per colour (on a
throwaway embedded PostgreSQL), a real Envoy started by ``bluegreen.dataplane.Envoy``,
and a load generator in its own process (``_load``, an internal sub-command of this file),
the same for every phase:

1. direct: load generator -> the blue instance's GET /version, ``--duration`` seconds;
2. proxied: load generator -> Envoy -> the same blue instance, same client, same run;
3. mirrored: the same load through Envoy while it mirrors every read to green's shadow
   clusters (``Shadow("green", 1.0)``, the shadow step's heaviest setting); ``mirror_p99_added_ms``
   is its p99 minus phase 2's: what mirroring costs live requests;
4. switch: load through Envoy while it is switched 20 times between blue and green. As in
   a deploy, the next colour is put in preview first (untimed; Envoy health-checks it
   there), then made live. ``switch_ms`` runs from asking for that switch (calling
   ``Envoy.apply``) to the first response from the new colour (the ``color`` in the
   /version body), median over the switches; ``apply_ms`` is until ``apply`` returned
   with Envoy's confirmation.

Failed requests are connection errors and 5xx, counted by the load generator in every
phase. The last line printed is one JSON object with the results.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
PY = sys.executable


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop when it is installed, else on the default loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


# -- role: load generator ---------------------------------------------------------------


async def load_main(url: str, conns: int, duration: float, warmup: float, trace: bool) -> None:
    """Keep ``conns`` keep-alive connections busy with GET ``url``; print one JSON line.
    With ``trace``, it also lists ``[monotonic time, color]`` of each colour change seen
    (CLOCK_MONOTONIC is the same clock in every process)."""
    import aiohttp

    latencies: list[float] = []
    errors = 0
    changes: list[tuple[float, str]] = []
    last_colour = ""
    measuring = False
    stop_at = time.monotonic() + warmup + duration

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal errors, last_colour
        while (now := time.monotonic()) < stop_at:
            colour = ""
            try:
                async with session.get(url) as resp:
                    body = await resp.read()
                    ok = resp.status < 500
                    if ok and trace:
                        colour = str(json.loads(body).get("color"))
            except (aiohttp.ClientError, OSError):
                ok = False
            done = time.monotonic()
            if colour and colour != last_colour:
                last_colour = colour
                changes.append((done, colour))
            if measuring:
                latencies.append(done - now)
                if not ok:
                    errors += 1

    connector = aiohttp.TCPConnector(limit=conns)
    async with aiohttp.ClientSession(connector=connector) as session:
        workers = [asyncio.create_task(worker(session)) for _ in range(conns)]
        await asyncio.sleep(warmup)
        measuring = True
        started = time.monotonic()
        await asyncio.gather(*workers)
        elapsed = time.monotonic() - started
    latencies.sort()

    def pct(q: float) -> float:
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    result: dict[str, Any] = {
        "requests": len(latencies),
        "errors": errors,
        "rps": len(latencies) / elapsed,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
    }
    if trace:
        result["changes"] = changes
    print(json.dumps(result), flush=True)


def load_cmd(url: str, args: argparse.Namespace, duration: float, trace: bool = False) -> list[str]:
    cmd = [
        PY, str(HERE), "_load", "--url", url, "--conns", str(args.conns),
        "--duration", str(duration), "--warmup", str(args.warmup),
    ]  # fmt: skip
    return [*cmd, "--trace"] if trace else cmd


def run_load(url: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = load_cmd(url, args, args.duration)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration + 120)
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed: {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def show(name: str, r: dict[str, Any]) -> None:
    print(
        f"{name:8}: {r['rps']:8.0f} req/s  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  "
        f"errors {r['errors']}",
        flush=True,
    )


# -- orchestration ----------------------------------------------------------------------


async def switches(envoy: Any, table: Any, args: argparse.Namespace, url: str) -> dict[str, Any]:
    """Load through Envoy while it is switched ``args.switches`` times."""
    span = args.switches * (2 * args.switch_interval + 0.5) + 3.0  # room for slow applies
    load = await asyncio.create_subprocess_exec(
        *load_cmd(url, args, span, trace=True), stdout=asyncio.subprocess.PIPE
    )
    await asyncio.sleep(args.warmup + 0.5)
    asked: list[tuple[float, str]] = []
    apply_ms: list[float] = []
    colour = current = "blue"
    for _ in range(args.switches):
        colour = "green" if colour == "blue" else "blue"
        # As a deploy does: the new colour is first in preview (where it is tested, and
        # where Envoy health-checks it), then the switch makes it live.
        await envoy.apply(table.with_live(current).with_preview(colour))
        await asyncio.sleep(args.switch_interval)
        t0 = time.monotonic()
        await envoy.apply(table.with_live(colour).with_preview(None))
        current = colour
        apply_ms.append((time.monotonic() - t0) * 1000)
        asked.append((t0, colour))
        await asyncio.sleep(args.switch_interval)
    out, _ = await load.communicate()
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    changes = [(float(t), str(c)) for t, c in result.pop("changes")]
    switch_ms = []
    for t0, c in asked:
        first = next((t for t, seen in changes if seen == c and t >= t0), None)
        if first is not None:
            switch_ms.append((first - t0) * 1000)
    result["switch_ms"] = switch_ms
    result["apply_ms"] = apply_ms
    return result


async def envoy_counters(envoy: Any) -> dict[str, int]:
    """A few of Envoy's upstream counters for blue: how it used the instance."""
    from bluegreen.dataplane.envoy_admin import EnvoyAdmin

    names = [
        "upstream_cx_total",
        "upstream_cx_connect_timeout",
        "upstream_cx_destroy_remote",
        "upstream_rq_retry",
        "upstream_rq_timeout",
        "outlier_detection.ejections_enforced_total",
    ]
    async with EnvoyAdmin(envoy.admin_address) as admin:
        return {n: await admin.stat_value(f"cluster.blue.{n}") for n in names}


async def bench(args: argparse.Namespace, urls: dict[str, str], state: Path) -> dict[str, Any]:
    from bluegreen.dataplane.envoy import Envoy
    from bluegreen.dataplane.settings import AppPaths, DataPlaneSettings
    from bluegreen.dataplane.table import Backend, RoutingTable, Shadow

    backends = tuple(
        Backend(f"{c}-1", c, "127.0.0.1", int(u.rsplit(":", 1)[1]))  # type: ignore[arg-type]
        for c, u in urls.items()
    )
    table = RoutingTable(live="blue", preview=None, backends=backends)
    settings = replace(DataPlaneSettings(https=None), workers=args.workers).with_ports()
    envoy = Envoy(settings, state_dir=state, app_paths=AppPaths())
    await envoy.start()
    try:
        await envoy.apply(table)
        proxied_url = envoy.urls()["public"] + args.path
        print(f"conns={args.conns} duration={args.duration}s envoy workers={args.workers}")
        direct = await asyncio.to_thread(run_load, urls["blue"] + args.path, args)
        show("direct", direct)
        proxied = await asyncio.to_thread(run_load, proxied_url, args)
        show("proxied", proxied)
        print(f"envoy   : {await envoy_counters(envoy)}", flush=True)
        await envoy.apply(table.with_shadow(Shadow("green", 1.0)))
        mirrored = await asyncio.to_thread(run_load, proxied_url, args)
        show("mirrored", mirrored)
        await envoy.apply(table)
        switched = await switches(envoy, table, args, proxied_url)
        sw = switched["switch_ms"]
        print(
            f"switch  : median {statistics.median(sw):.2f} ms (min {min(sw):.2f}, max "
            f"{max(sw):.2f}) over {len(sw)} switches; apply() confirmed after median "
            f"{statistics.median(switched['apply_ms']):.2f} ms; {switched['requests']} "
            f"requests during switches, {switched['errors']} failed",
            flush=True,
        )
    finally:
        await envoy.stop()
    return {
        "upstream": "clinic",
        "path": args.path,
        "conns": args.conns,
        "duration_s": args.duration,
        "envoy_workers": args.workers,
        "direct_rps": round(direct["rps"], 1),
        "proxied_rps": round(proxied["rps"], 1),
        "ratio": round(proxied["rps"] / direct["rps"], 3),
        "direct_p99_ms": round(direct["p99_ms"], 3),
        "proxied_p99_ms": round(proxied["p99_ms"], 3),
        "p99_added_ms": round(proxied["p99_ms"] - direct["p99_ms"], 3),
        "mirrored_rps": round(mirrored["rps"], 1),
        "mirrored_p99_ms": round(mirrored["p99_ms"], 3),
        "mirror_p99_added_ms": round(mirrored["p99_ms"] - proxied["p99_ms"], 3),
        "switch_ms": round(statistics.median(sw), 3),
        "switch_max_ms": round(max(sw), 3),
        "apply_ms": round(statistics.median(switched["apply_ms"]), 3),
        "switches": len(sw),
        "failed": direct["errors"] + proxied["errors"] + mirrored["errors"] + switched["errors"],
        "failed_during_switches": switched["errors"],
        "cpus": os.cpu_count(),
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_load":
        p = argparse.ArgumentParser(prog="dataplane.py _load")
        p.add_argument("--url", required=True)
        p.add_argument("--conns", type=int, default=64)
        p.add_argument("--duration", type=float, default=10.0)
        p.add_argument("--warmup", type=float, default=1.0)
        p.add_argument("--trace", action="store_true")
        a = p.parse_args(sys.argv[2:])
        run_loop(load_main(a.url, a.conns, a.duration, a.warmup, a.trace))
        return

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--path", default="/version", help="path the load generator requests")
    p.add_argument("--conns", type=int, default=64, help="concurrent keep-alive connections")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--switches", type=int, default=20)
    p.add_argument("--switch-interval", type=float, default=0.25)
    p.add_argument("--workers", type=int, default=1, help="Envoy worker threads")
    args = p.parse_args()

    from harness import clinic_colours, database

    with (
        database() as url,
        clinic_colours(url) as urls,
        tempfile.TemporaryDirectory(prefix="bench-envoy-") as state,
    ):
        result = asyncio.run(bench(args, urls, Path(state)))
    print(json.dumps(result))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
