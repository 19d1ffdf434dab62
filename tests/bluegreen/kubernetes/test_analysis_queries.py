"""The post-promotion queries, evaluated by Prometheus's own engine (``promtool test rules``)
on synthetic series shaped like the clinic's metrics: healthy, breaching, within the ratio,
too few requests (no result: inconclusive), no baseline."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from bluegreen.config import load_config
from bluegreen.kubernetes.manifests import Options
from bluegreen.kubernetes.operations import render

REPO = Path(__file__).resolve().parents[3]
PROMTOOL = shutil.which("promtool")

if PROMTOOL is None:
    if os.environ.get("CI"):
        pytest.fail("promtool is missing: CI installs it (Debian package prometheus)")
    pytestmark = pytest.mark.skip(reason="promtool not installed (apt-get install prometheus)")

NS = "clinic"
EVAL = "10m"  # the scenarios' series run for 15 minutes, one sample every 15 s


def queries() -> dict[str, str]:
    """The two queries with the arguments Argo would pass (hashes ``new`` and ``old``)."""
    config = load_config(REPO / "bluegreen.toml", environ={})
    objects = render(config, Options(image="clinic:1", namespace=NS))
    (post,) = [o for o in objects if o["metadata"]["name"].endswith("post-promotion")]
    args = {a["name"]: a.get("value") for a in post["spec"]["args"]}
    args |= {"new-hash": "new", "old-hash": "old"}
    return {
        m["name"]: re.sub(
            r"\{\{args\.([a-z0-9-]+)\}\}",
            lambda g: str(args[g.group(1)]),
            m["provider"]["prometheus"]["query"],
        )
        for m in post["spec"]["metrics"]
    }


def traffic(colour: str, *, ok: int, errors: int = 0, slow: bool = False) -> list[dict[str, str]]:
    """Counters growing by ``ok`` 2xx and ``errors`` 5xx answers every 15 s, all under 50 ms
    (or all between 50 ms and 1 s when ``slow``)."""
    common = f'namespace="{NS}",colour="{colour}",route="/",method="GET",release="r"'
    total = ok + errors
    series = [
        {
            "series": f'clinic_http_requests_total{{{common},status_class="2xx"}}',
            "values": f"0+{ok}x60",
        },
        {
            "series": f'clinic_http_requests_total{{{common},status_class="5xx"}}',
            "values": f"0+{errors}x60",
        },
    ]
    fast = 0 if slow else total
    for le, per_step in (("0.05", fast), ("1", total), ("+Inf", total)):
        series.append(
            {
                "series": f'clinic_http_request_duration_seconds_bucket{{{common},le="{le}"}}',
                "values": f"0+{per_step}x60",
            }
        )
    return series


# name: (series, error-rate breach, p95 breach); None = no result (inconclusive)
SCENARIOS: dict[str, tuple[list[dict[str, str]], int | None, int | None]] = {
    "healthy": ([*traffic("new", ok=10), *traffic("old", ok=10)], 0, 0),
    "errors": ([*traffic("new", ok=8, errors=2), *traffic("old", ok=10)], 1, 0),
    # 12 % errors, but the old colour had 8 %: within 2x the baseline, so no breach.
    "errors-like-before": (
        [*traffic("new", ok=22, errors=3), *traffic("old", ok=23, errors=2)],
        0,
        0,
    ),
    "slow": ([*traffic("new", ok=10, slow=True), *traffic("old", ok=10)], 0, 1),
    "too-few-requests": ([*traffic("new", ok=1), *traffic("old", ok=10)], None, None),
    "no-series": (traffic("old", ok=10), None, None),
    # No baseline: absolute error rate only, latency rule skipped.
    "no-baseline": (traffic("new", ok=10, slow=True), 0, 0),
    "no-baseline-errors": (traffic("new", ok=5, errors=5), 1, 0),
}


def expect(query: str, breach: int | None) -> dict[str, Any]:
    samples = [] if breach is None else [{"labels": "{}", "value": breach}]
    return {"expr": f"({query}) > bool 0", "eval_time": EVAL, "exp_samples": samples}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_queries_judge_like_the_one_host_analysis(scenario: str, tmp_path: Path) -> None:
    series, error_breach, p95_breach = SCENARIOS[scenario]
    q = queries()
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": []}))
    test = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "15s",
                "input_series": series,
                "promql_expr_test": [
                    expect(q["error-rate-over-allowance"], error_breach),
                    expect(q["p95-over-bound"], p95_breach),
                ],
            }
        ],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(test, sort_keys=False))
    assert PROMTOOL is not None
    done = subprocess.run(
        [PROMTOOL, "test", "rules", "test.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
