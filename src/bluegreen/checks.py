"""Checks a deploy relies on: HTTP probes, hooks, and the post-switch analysis.

* :func:`http_check` never raises for network trouble: it reports it.
* :func:`run_hook` runs a command without a shell in its own process group,
  streams its combined output line by line, and kills the whole group on timeout.
* :func:`analyse` is pure: the same figures always give the same verdict.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from bluegreen.config import ADMIN_TOKEN_ENV, AnalysisConfig

MAX_HOOK_OUTPUT = 64 * 1024
"""Characters of hook output kept (the tail); every line still goes to ``log``."""

KILL_GRACE_SECONDS = 2.0


def child_env(extra: Mapping[str, str]) -> dict[str, str]:
    """Environment for a child process: ours without the admin token, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k != ADMIN_TOKEN_ENV}
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra)
    return env


# --------------------------------------------------------------------------- HTTP


@dataclass(frozen=True, slots=True)
class CheckResult:
    """``ok`` iff a 2xx answer came; ``status`` is None when no answer came at all."""

    ok: bool
    status: int | None
    detail: str


async def http_check(url: str, timeout: float) -> CheckResult:  # noqa: ASYNC109
    """GET ``url`` once; a 2xx within ``timeout`` seconds is ok."""
    try:
        async with httpx.AsyncClient(timeout=timeout, trust_env=False) as client:
            resp = await client.get(url)
    except httpx.TimeoutException:
        return CheckResult(False, None, f"GET {url}: no answer within {timeout:g}s")
    except httpx.HTTPError as exc:
        return CheckResult(False, None, f"GET {url}: {type(exc).__name__}: {exc}")
    ok = 200 <= resp.status_code < 300
    body = resp.text[:200].strip()
    detail = f"GET {url}: {resp.status_code}" + (f" {body}" if body and not ok else "")
    return CheckResult(ok, resp.status_code, detail)


# --------------------------------------------------------------------------- hooks


@dataclass(frozen=True, slots=True)
class HookResult:
    """``ok`` iff the command exited 0 in time; ``output`` is the combined stdout/stderr tail."""

    ok: bool
    exit_code: int | None
    output: str
    timed_out: bool = False


async def kill_group(proc: asyncio.subprocess.Process, *, grace: float) -> None:
    """SIGTERM ``proc``'s process group, SIGKILL it after ``grace`` s; reap ``proc``."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), grace)
    # Members of the group may outlive the leader: always finish them off.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    await proc.wait()


async def run_hook(
    command: Sequence[str] | str,
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout: float,  # noqa: ASYNC109 - the hook's own time limit, enforced here
    log: Callable[[str], None],
) -> HookResult:
    """Run ``command`` (a string is split with shlex, never given to a shell).

    ``env`` is added to the controller's environment (minus the admin token).
    """
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    if not argv:
        return HookResult(False, None, "empty hook command")
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env=child_env(env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        msg = f"cannot run hook {shlex.join(argv)}: {exc}"
        log(msg)
        return HookResult(False, None, msg)

    chunks: list[str] = []
    size = 0

    def keep(line: str) -> None:
        nonlocal size
        chunks.append(line)
        size += len(line) + 1
        while size > MAX_HOOK_OUTPUT and len(chunks) > 1:
            size -= len(chunks.pop(0)) + 1

    async def pump() -> None:
        assert proc.stdout is not None
        while raw := await proc.stdout.readline():
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            keep(line)
            log(line)

    started = time.monotonic()
    reader = asyncio.create_task(pump())
    timed_out = False
    try:
        await asyncio.wait_for(asyncio.shield(reader), timeout)
        await proc.wait()
    except TimeoutError:
        timed_out = True
    finally:
        if proc.returncode is None or timed_out:
            await kill_group(proc, grace=KILL_GRACE_SECONDS)
        # Once the group is dead the pipe closes; don't wait forever on a leaked fd.
        try:
            await asyncio.wait_for(reader, KILL_GRACE_SECONDS)
        except TimeoutError:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
    if timed_out:
        msg = (
            f"[bluegreen] hook timed out after {timeout:g}s "
            f"(ran {time.monotonic() - started:.1f}s); its process group was killed"
        )
        keep(msg)
        log(msg)
        return HookResult(False, proc.returncode, "\n".join(chunks), timed_out=True)
    rc = proc.returncode
    return HookResult(rc == 0, rc, "\n".join(chunks))


# --------------------------------------------------------------------------- analysis


@dataclass(frozen=True, slots=True)
class Stats:
    """Traffic figures of one colour over the analysis window."""

    requests: int
    errors_5xx: int
    p95_seconds: float | None = None

    @property
    def error_rate(self) -> float:
        """5xx answers per request (0 when there were no requests)."""
        return self.errors_5xx / self.requests if self.requests else 0.0


@dataclass(frozen=True, slots=True)
class AnalysisThresholds:
    """When the candidate counts as worse than the baseline (see :func:`analyse`)."""

    max_error_rate: float = 0.02
    max_error_rate_ratio: float = 2.0
    max_p95_ratio: float = 2.0
    min_p95_ms: float = 50.0
    min_requests: int = 20

    @classmethod
    def from_config(cls, cfg: AnalysisConfig) -> AnalysisThresholds:
        """The thresholds of ``[analysis]``."""
        return cls(
            max_error_rate=cfg.max_error_rate,
            max_error_rate_ratio=cfg.max_error_rate_ratio,
            max_p95_ratio=cfg.max_p95_ratio,
            min_p95_ms=cfg.min_p95_ms,
            min_requests=cfg.min_requests,
        )


@dataclass(frozen=True, slots=True)
class Verdict:
    """``ok`` False means roll back; ``reason`` says why in one line."""

    ok: bool
    reason: str
    figures: dict[str, float | int | None]


def analyse(*, baseline: Stats, candidate: Stats, thresholds: AnalysisThresholds) -> Verdict:
    """Compare the candidate (new live colour) with the baseline (old one).

    * candidate with fewer than ``min_requests`` requests: ok, inconclusive;
    * error breach: candidate rate > ``max_error_rate`` AND > baseline rate x
      ``max_error_rate_ratio``;
    * latency breach: candidate p95 > baseline p95 x ``max_p95_ratio`` AND the
      difference > ``min_p95_ms``.

    A baseline with fewer than ``min_requests`` requests counts as no baseline:
    its error rate is taken as 0 and the latency rule is skipped.
    """
    t = thresholds
    has_baseline = baseline.requests >= t.min_requests
    base_rate = baseline.error_rate if has_baseline else 0.0
    base_p95 = baseline.p95_seconds if has_baseline else None
    cand_rate = candidate.error_rate
    cand_p95 = candidate.p95_seconds
    figures: dict[str, float | int | None] = {
        "candidate_requests": candidate.requests,
        "candidate_errors_5xx": candidate.errors_5xx,
        "candidate_error_rate": cand_rate,
        "candidate_p95_ms": None if cand_p95 is None else cand_p95 * 1000,
        "baseline_requests": baseline.requests,
        "baseline_errors_5xx": baseline.errors_5xx,
        "baseline_error_rate": baseline.error_rate,
        "baseline_p95_ms": None if baseline.p95_seconds is None else baseline.p95_seconds * 1000,
    }
    if candidate.requests < t.min_requests:
        return Verdict(
            True,
            f"inconclusive: only {candidate.requests} requests "
            f"(need {t.min_requests} for a verdict); passing",
            figures,
        )
    breaches: list[str] = []
    if cand_rate > t.max_error_rate and cand_rate > base_rate * t.max_error_rate_ratio:
        breaches.append(
            f"error rate {cand_rate:.2%} > {t.max_error_rate:.2%} and > "
            f"{t.max_error_rate_ratio:g}x baseline {base_rate:.2%}"
        )
    if cand_p95 is not None and base_p95 is not None:
        diff_ms = (cand_p95 - base_p95) * 1000
        if cand_p95 > base_p95 * t.max_p95_ratio and diff_ms > t.min_p95_ms:
            breaches.append(
                f"p95 {cand_p95 * 1000:.0f}ms > {t.max_p95_ratio:g}x baseline "
                f"{base_p95 * 1000:.0f}ms (+{diff_ms:.0f}ms > {t.min_p95_ms:g}ms)"
            )
    if breaches:
        return Verdict(False, "; ".join(breaches), figures)
    note = "" if has_baseline else " (baseline too small; absolute error rate only)"
    return Verdict(
        True,
        f"healthy: error rate {cand_rate:.2%}"
        + ("" if cand_p95 is None else f", p95 {cand_p95 * 1000:.0f}ms")
        + note,
        figures,
    )
