"""``bluegreen render kubernetes``: every object valid offline (Kubernetes 1.33 OpenAPI schemas,
Argo Rollouts v1.9.1 CRD schemas), and wired together: Services select what the Rollout labels,
analysis names match their references, thresholds are bluegreen.toml's, no secret value."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from k8s_schemas import errors

from bluegreen.cli import main
from bluegreen.config import Config, load_config
from bluegreen.kubernetes.manifests import SECRET_KEYS, Options
from bluegreen.kubernetes.operations import render
from bluegreen.kubernetes.output import load_base

REPO = Path(__file__).resolve().parents[3]
Obj = dict[str, Any]


def repo_config() -> Config:
    return load_config(REPO / "bluegreen.toml", environ={})


def variant_config() -> Config:
    """Other numbers everywhere, manual promotion's settings and no post-analysis window."""
    return repo_config().with_overrides(
        {
            "app": {"name": "telehealth", "env": {"CLINIC_FEATURE_X": "on"}},
            "replicas": {"blue": 3, "green": 3},
            "timeouts": {"scale_down_delay": 45, "analysis_window": 120, "start": 7},
            "analysis": {
                "max_error_rate": 0.05,
                "max_error_rate_ratio": 1.5,
                "max_p95_ratio": 3.0,
                "min_p95_ms": 80,
                "min_requests": 200,
            },
        }
    )


CASES = {
    "repo": (repo_config, Options(image="registry.example/clinic:1.4.0", namespace="clinic")),
    "variant": (
        variant_config,
        Options(
            image="registry.example/clinic@sha256:" + "ab" * 32,
            namespace="prod-eu",
            live_image="registry.example/clinic:1.3.9",
            manual=True,
            secret_name="telehealth-env",
        ),
    ),
}


@pytest.fixture(params=sorted(CASES))
def rendered(request: pytest.FixtureRequest) -> tuple[Config, Options, list[Obj]]:
    make, opts = CASES[request.param]
    config = make()
    return config, opts, render(config, opts)


def one(objects: list[Obj], kind: str, name_part: str = "") -> Obj:
    found = [o for o in objects if o["kind"] == kind and name_part in o["metadata"]["name"]]
    assert len(found) == 1, [o["metadata"]["name"] for o in found]
    return found[0]


# --------------------------------------------------------------------------- validity


def test_every_object_is_valid(rendered: tuple[Config, Options, list[Obj]]) -> None:
    _, _, objects = rendered
    kinds = {o["kind"] for o in objects}
    assert kinds == {
        "Job",
        "Service",
        "AnalysisTemplate",
        "Rollout",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Deployment",
        "NetworkPolicy",
    }
    for obj in objects:
        assert errors(obj) == [], f"{obj['kind']} {obj['metadata']['name']}"


def test_pod_specs_inside_argo_objects_are_valid_core_pods(
    rendered: tuple[Config, Options, list[Obj]],
) -> None:
    """The Rollout's pod template and the analysis Job are core objects too: checked against
    Kubernetes' own schemas, not only Argo's copy of them."""
    _, _, objects = rendered
    template = one(objects, "Rollout")["spec"]["template"]
    pod_template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "x"}}
    assert errors({**pod_template, "template": template}) == []
    job_spec = one(objects, "AnalysisTemplate", "pre")["spec"]["metrics"][0]["provider"]["job"]
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "x"}, **job_spec}
    assert errors(job) == []


def _broken(objects: list[Obj], kind: str, name_part: str, path: str, value: Any) -> Obj:
    obj = copy.deepcopy(one(objects, kind, name_part))
    *parents, last = path.split(".")
    node = obj
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if last.startswith("~"):  # rename a key (a misspelling)
        old, new = last[1:].split(">")
        node[new] = node.pop(old)
    else:
        node[last] = value
    return obj


@pytest.mark.parametrize(
    ("kind", "name_part", "path", "value"),
    [
        ("Rollout", "", "spec.strategy.blueGreen.~activeService>activeSevrice", None),
        ("Rollout", "", "spec.strategy.blueGreen.scaleDownDelaySeconds", "300s"),
        ("Rollout", "", "spec.template.spec.containers.0.~readinessProbe>readynessProbe", None),
        ("AnalysisTemplate", "post", "spec.metrics.0.~successCondition>sucessCondition", None),
        ("AnalysisTemplate", "post", "spec.metrics.0.count", [1]),
        ("AnalysisTemplate", "pre", "spec.metrics.0.provider.~job>jobs", None),
        ("Job", "migrate", "spec.~backoffLimit>backofLimit", None),
        ("Job", "migrate", "spec.backoffLimit", "zero"),
        ("Service", "active", "spec.ports.0.port", "eighty"),
        ("NetworkPolicy", "web", "spec.~podSelector>podSelecter", None),
        ("Deployment", "worker", "spec.replicas", "two"),
    ],
)
def test_a_misspelled_field_or_a_wrong_type_fails(
    kind: str, name_part: str, path: str, value: Any
) -> None:
    config, opts = repo_config(), CASES["variant"][1]
    broken = _broken(render(config, opts), kind, name_part, path, value)
    assert errors(broken) != []


# --------------------------------------------------------------------------- wiring


def test_services_select_what_the_rollout_labels(
    rendered: tuple[Config, Options, list[Obj]],
) -> None:
    _, _, objects = rendered
    ro = one(objects, "Rollout")
    pod_labels = ro["spec"]["template"]["metadata"]["labels"]
    assert ro["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    bg = ro["spec"]["strategy"]["blueGreen"]
    for name in (bg["activeService"], bg["previewService"]):
        svc = one(objects, "Service", name)
        assert svc["metadata"]["name"] == name
        assert svc["spec"]["selector"].items() <= pod_labels.items()
        ports = {p["name"] for p in ro["spec"]["template"]["spec"]["containers"][0]["ports"]}
        assert svc["spec"]["ports"][0]["targetPort"] in ports
    for kind in ("PodDisruptionBudget",):
        sel = one(objects, kind)["spec"]["selector"]["matchLabels"]
        assert sel.items() <= pod_labels.items()
    web_policy = one(objects, "NetworkPolicy", "web")["spec"]["podSelector"]["matchLabels"]
    assert web_policy.items() <= pod_labels.items()
    hpa = one(objects, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (hpa["kind"], hpa["name"]) == ("Rollout", ro["metadata"]["name"])


def test_analysis_templates_match_their_references_and_arguments(
    rendered: tuple[Config, Options, list[Obj]],
) -> None:
    _, _, objects = rendered
    bg = one(objects, "Rollout")["spec"]["strategy"]["blueGreen"]
    for key in ("prePromotionAnalysis", "postPromotionAnalysis"):
        (ref,) = bg[key]["templates"]
        template = one(objects, "AnalysisTemplate", ref["templateName"])
        declared = {a["name"] for a in template["spec"]["args"]}
        without_value = {a["name"] for a in template["spec"]["args"] if "value" not in a}
        given = {a["name"] for a in bg[key]["args"]}
        assert without_value == given  # every argument without a default is passed
        used = set(re.findall(r"\{\{args\.([a-z0-9-]+)\}\}", yaml.safe_dump(template)))
        assert used <= declared


def test_thresholds_and_timeouts_are_bluegreen_toml_s(
    rendered: tuple[Config, Options, list[Obj]],
) -> None:
    config, opts, objects = rendered
    post = one(objects, "AnalysisTemplate", "post")
    args = {a["name"]: a.get("value") for a in post["spec"]["args"]}
    a = config.analysis
    assert float(args["max-error-rate"]) == a.max_error_rate
    assert float(args["max-error-rate-ratio"]) == a.max_error_rate_ratio
    assert float(args["max-p95-ratio"]) == a.max_p95_ratio
    assert float(args["min-p95-ms"]) == a.min_p95_ms
    assert int(args["min-requests"]) == a.min_requests
    ro = one(objects, "Rollout")
    bg = ro["spec"]["strategy"]["blueGreen"]
    assert bg["scaleDownDelaySeconds"] == config.timeouts.scale_down_delay
    assert bg["autoPromotionEnabled"] is (not opts.manual)
    assert ro["spec"]["replicas"] == config.replicas.blue
    for metric in post["spec"]["metrics"]:
        assert metric["initialDelay"] == f"{max(int(config.timeouts.analysis_window), 60)}s"
    web = ro["spec"]["template"]["spec"]["containers"][0]
    assert web["readinessProbe"]["httpGet"]["path"] == config.app.ready_path
    assert web["livenessProbe"]["httpGet"]["path"] == config.app.live_path


def test_empty_results_are_inconclusive_never_success(
    rendered: tuple[Config, Options, list[Obj]],
) -> None:
    _, _, objects = rendered
    for metric in one(objects, "AnalysisTemplate", "post")["spec"]["metrics"]:
        for condition in (metric["successCondition"], metric["failureCondition"]):
            assert condition.startswith("len(result) > 0 && !isNaN(result[0]) && ")
        assert metric["inconclusiveLimit"] == 0 and metric["failureLimit"] == 0
        # Too few requests: the query itself returns nothing.
        assert metric["provider"]["prometheus"]["query"].endswith(">= {{args.min-requests}})")


def test_the_queries_are_promql(rendered: tuple[Config, Options, list[Obj]]) -> None:
    _, _, objects = rendered
    post = one(objects, "AnalysisTemplate", "post")
    values = {a["name"]: a.get("value", "abc123") for a in post["spec"]["args"]}
    for metric in post["spec"]["metrics"]:
        query = re.sub(
            r"\{\{args\.([a-z0-9-]+)\}\}",
            lambda m: values[m.group(1)],
            metric["provider"]["prometheus"]["query"],
        )
        parsed = promql_parser.parse(query)
        assert "clinic_http_request" in str(parsed)


def walk(node: Any) -> list[Obj]:
    """Every dict inside ``node``."""
    if isinstance(node, dict):
        return [node, *(d for v in node.values() for d in walk(v))]
    if isinstance(node, list):
        return [d for v in node for d in walk(v)]
    return []


def test_no_secret_value_is_rendered(rendered: tuple[Config, Options, list[Obj]]) -> None:
    _, opts, objects = rendered
    assert not [o for o in objects if o["kind"] == "Secret"]
    text = yaml.safe_dump_all(objects)
    for value in ("dev-only-insecure-secret-change-me", "postgresql://", "password:"):
        assert value not in text
    refs = [d["secretKeyRef"] for d in walk(objects) if "secretKeyRef" in d]
    assert refs and {r["name"] for r in refs} == {opts.secret_name}
    assert {r["key"] for r in refs} == set(SECRET_KEYS.values())
    env_vars = [d for d in walk(objects) if d.keys() >= {"name"} and d["name"] in SECRET_KEYS]
    assert env_vars and all("value" not in d and "valueFrom" in d for d in env_vars)


def test_web_pods_are_hardened_and_spread(rendered: tuple[Config, Options, list[Obj]]) -> None:
    _, _, objects = rendered
    spec = one(objects, "Rollout")["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    (web,) = spec["containers"]
    assert web["securityContext"]["readOnlyRootFilesystem"] is True
    assert web["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert web["resources"]["limits"] and web["resources"]["requests"]
    term = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term[0]["podAffinityTerm"]["matchLabelKeys"] == ["rollouts-pod-template-hash"]


def test_the_cli_writes_a_kustomize_base(tmp_path: Path) -> None:
    out = tmp_path / "base"
    code = main(
        [
            "--config",
            str(REPO / "bluegreen.toml"),
            "render",
            "kubernetes",
            "--image",
            "clinic:TAG",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    kust = yaml.safe_load((out / "kustomization.yaml").read_text())
    assert kust["kind"] == "Kustomization" and kust["namespace"] == "clinic"
    objects = load_base(out)
    assert len(objects) == len(kust["resources"]) >= 10
    for obj in objects:
        assert errors(obj) == [], obj["metadata"]["name"]
    assert objects == render(repo_config(), Options(image="clinic:TAG", namespace="clinic"))


def test_settings_kubernetes_does_not_carry_are_named(tmp_path: Path) -> None:
    from dataclasses import replace

    from bluegreen.kubernetes.cli import one_host_only

    config = repo_config()
    plain = replace(
        config,
        shadow=replace(config.shadow, share=0.0),
        switch=replace(config.switch, steps=(100,)),
    )
    assert one_host_only(plain) == []
    both = replace(plain, shadow=replace(plain.shadow, share=1.0))
    both = replace(both, switch=replace(both.switch, steps=(10, 50, 100)))
    notes = one_host_only(both)
    assert len(notes) == 2
    assert notes[0].startswith("[shadow] is not rendered")
    assert notes[1].startswith("[switch] steps are not rendered")
