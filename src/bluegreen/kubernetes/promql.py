"""The post-promotion analysis as Prometheus queries on the clinic's own metrics.

The same rules as :func:`bluegreen.checks.analyse`, new ReplicaSet (candidate) against the old
one (baseline), selected by the ``colour`` label that each pod sets to its
``rollouts-pod-template-hash`` (Argo's own notion of the two colours):

* error breach: candidate 5xx rate > ``max-error-rate`` AND > baseline rate x
  ``max-error-rate-ratio``, i.e. candidate rate > the larger of the two; the query returns the
  candidate rate minus that allowance (> 0 = breach);
* latency breach: candidate p95 > baseline p95 x ``max-p95-ratio`` AND more than ``min-p95-ms``
  above it; the query returns the candidate p95 minus the larger bound (> 0 = breach);
* fewer than ``min-requests`` candidate requests: the query returns nothing, which the metric
  treats as *inconclusive* (Argo pauses for a human), never as success;
* a baseline with fewer than ``min-requests`` requests counts as none: error rate 0, latency
  rule skipped.

Thresholds are AnalysisTemplate arguments (``{{args.NAME}}``), so the AnalysisRun shows them.
After the switch the old ReplicaSet gets no traffic, so the baseline is read over the window
just before it (``offset``).
"""

from __future__ import annotations

from dataclasses import dataclass

REQUESTS = "clinic_http_requests_total"
BUCKETS = "clinic_http_request_duration_seconds_bucket"
NEW = "{{args.new-hash}}"
OLD = "{{args.old-hash}}"

# Present and a number: anything else (an empty vector, NaN) matches neither condition and
# so is inconclusive (Argo Rollouts issue #4479: `all(result, ...)` passes on no data).
_HAS = "len(result) > 0 && !isNaN(result[0])"
SUCCESS = f"{_HAS} && result[0] <= 0"
FAILURE = f"{_HAS} && result[0] > 0"


@dataclass(frozen=True, slots=True)
class Selector:
    """Which series: a namespace, a window (seconds) and the metric names."""

    namespace: str
    window: int

    def requests(self, colour: str, *, extra: str = "", baseline: bool = False) -> str:
        labels = f'namespace="{self.namespace}",colour="{colour}"{extra}'
        offset = f" offset {self.window}s" if baseline else ""
        return f"sum(increase({REQUESTS}{{{labels}}}[{self.window}s]{offset}))"

    def enough(self, colour: str, *, baseline: bool = False) -> str:
        return f"({self.requests(colour, baseline=baseline)} >= {{{{args.min-requests}}}})"

    def error_rate(self, colour: str, *, baseline: bool = False) -> str:
        errors = self.requests(colour, extra=',status_class="5xx"', baseline=baseline)
        total = self.requests(colour, baseline=baseline)
        return f"(({errors} or on() vector(0)) / {total})"

    def p95(self, colour: str, *, baseline: bool = False) -> str:
        labels = f'namespace="{self.namespace}",colour="{colour}"'
        offset = f" offset {self.window}s" if baseline else ""
        rate = f"rate({BUCKETS}{{{labels}}}[{self.window}s]{offset})"
        return f"histogram_quantile(0.95, sum by (le) ({rate}))"


def error_rate_excess(sel: Selector) -> str:
    """Candidate 5xx rate minus what it may reach; empty below ``min-requests``."""
    baseline = (
        f"(({sel.error_rate(OLD, baseline=True)} and on() {sel.enough(OLD, baseline=True)})"
        " or on() vector(0))"
    )
    allowance = (
        f"clamp_min({baseline} * {{{{args.max-error-rate-ratio}}}}, {{{{args.max-error-rate}}}})"
    )
    return f"({sel.error_rate(NEW)} - on() {allowance}) and on() {sel.enough(NEW)}"


def p95_excess(sel: Selector) -> str:
    """Candidate p95 (seconds) minus the larger of ratio x baseline and baseline + margin;
    -Inf without a baseline (the rule is skipped); empty below ``min-requests``."""
    base = f"({sel.p95(OLD, baseline=True)} and on() {sel.enough(OLD, baseline=True)})"
    by_ratio = f"({base} * {{{{args.max-p95-ratio}}}})"
    by_margin = f"({base} + {{{{args.min-p95-ms}}}} / 1000)"
    bound = f"((({by_ratio} >= on() {by_margin}) or on() {by_margin}) or on() vector(+Inf))"
    return f"({sel.p95(NEW)} - on() {bound}) and on() {sel.enough(NEW)}"
