"""Checks a deploy relies on: HTTP probes and the post-switch analysis.

* :func:`http_check` never raises for network trouble: it reports it.
* :func:`analyse` is pure: the same figures always give the same verdict.
* :class:`BreachWatch` names a breach as soon as it is conclusive, while the window runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import httpx

from bluegreen.config import AnalysisConfig

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
    confidence_z: float = 3.0
    failure_limit: int = 3

    @classmethod
    def from_config(cls, cfg: AnalysisConfig) -> AnalysisThresholds:
        """The thresholds of ``[analysis]``."""
        return cls(
            max_error_rate=cfg.max_error_rate,
            max_error_rate_ratio=cfg.max_error_rate_ratio,
            max_p95_ratio=cfg.max_p95_ratio,
            min_p95_ms=cfg.min_p95_ms,
            min_requests=cfg.min_requests,
            confidence_z=cfg.confidence_z,
            failure_limit=cfg.failure_limit,
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


# --------------------------------------------------------------------------- early breach


def wilson_lower(failures: int, n: int, z: float) -> float:
    """The lower end of the Wilson score interval of a failure rate: with ``z`` = 3 the true
    rate is below it with a chance of about 0.13 %."""
    if n <= 0:
        return 0.0
    p = failures / n
    z2 = z * z
    centre = p + z2 / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, (centre - margin) / (1 + z2 / n))


class BreachWatch:
    """Judges the candidate again at every look while the analysis window runs, and names a
    breach as soon as it is conclusive, without waiting for the window's end:

    * error rate: once ``min_requests`` are in, when even the lower end of the candidate's
      5xx rate's confidence interval (:func:`wilson_lower`, ``confidence_z``) is above the
      limit :func:`analyse` applies (``max_error_rate`` and ``max_error_rate_ratio`` x the
      baseline's rate): the rate is over it, not just unlucky;
    * latency: when the p95 rule of :func:`analyse` holds at ``failure_limit`` measurements
      in a row (as Argo Rollouts' ``failureLimit``). A measurement is the p95 of the
      requests since the previous one, taken once at least ``min_requests`` came in: the
      measurements do not overlap, so the slow first second of a cold-started colour counts
      once, not at every look.

    Passing is never decided early: that still takes the whole window (:func:`analyse`)."""

    def __init__(self, thresholds: AnalysisThresholds) -> None:
        self.t = thresholds
        self.slow_measurements = 0

    def look(self, *, baseline: Stats, candidate: Stats, recent: Stats | None = None) -> str | None:
        """One look at the candidate: ``candidate`` is all its traffic since the switch,
        ``recent`` a latency measurement (the requests since the previous one) or None when
        too few came in since it to take one. Returns the breach, if conclusive."""
        t = self.t
        has_baseline = baseline.requests >= t.min_requests
        if candidate.requests >= max(t.min_requests, 1):
            base_rate = baseline.error_rate if has_baseline else 0.0
            limit = max(t.max_error_rate, base_rate * t.max_error_rate_ratio)
            lower = wilson_lower(candidate.errors_5xx, candidate.requests, t.confidence_z)
            if lower > limit:
                return (
                    f"error rate {candidate.error_rate:.2%} ({candidate.errors_5xx} of "
                    f"{candidate.requests}) is above {limit:.2%} beyond doubt (lower bound "
                    f"{lower:.2%} at z={t.confidence_z:g})"
                )
        if recent is None or recent.requests < max(t.min_requests, 1):
            return None
        base_p95 = baseline.p95_seconds if has_baseline else None
        cand_p95 = recent.p95_seconds
        slow = (
            cand_p95 is not None
            and base_p95 is not None
            and cand_p95 > base_p95 * t.max_p95_ratio
            and (cand_p95 - base_p95) * 1000 > t.min_p95_ms
        )
        self.slow_measurements = self.slow_measurements + 1 if slow else 0
        if slow and self.slow_measurements >= t.failure_limit:
            assert cand_p95 is not None and base_p95 is not None
            return (
                f"p95 {cand_p95 * 1000:.0f}ms > {t.max_p95_ratio:g}x baseline "
                f"{base_p95 * 1000:.0f}ms in {self.slow_measurements} measurements in a row "
                f"({recent.requests} requests in the last)"
            )
        return None
