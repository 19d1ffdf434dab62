"""Offline validation: core objects against the Kubernetes OpenAPI schemas
(kubernetes-validate), Argo Rollouts objects against their vendored CRD schemas (jsonschema)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate

KUBERNETES = "1.33.0"  # a minor version kubernetes-validate ships schemas for
ARGO = Path(__file__).parent / "fixtures" / "argo-rollouts"
CRDS = {"Rollout": "rollout", "AnalysisTemplate": "analysistemplate"}


def strict(schema: Any) -> Any:
    """Unknown keys rejected wherever the CRD lists the known ones (strict field validation)."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


@cache
def argo_validator(kind: str) -> jsonschema.protocols.Validator:
    schema = json.loads((ARGO / f"{CRDS[kind]}.v1alpha1.schema.json").read_text())
    return jsonschema.Draft7Validator(strict(schema))


def validate(obj: dict[str, Any]) -> None:
    """Raise (a jsonschema ``ValidationError``) if ``obj`` is not a valid object of its kind."""
    if obj["apiVersion"].startswith("argoproj.io/"):
        argo_validator(obj["kind"]).validate(obj)
    else:
        kubernetes_validate.validate(obj, KUBERNETES, strict=True)


def errors(obj: dict[str, Any]) -> list[str]:
    """Every problem (empty when valid), for assertion messages."""
    try:
        validate(obj)
    except (jsonschema.ValidationError, kubernetes_validate.ValidationError) as exc:
        return [f"{'.'.join(str(p) for p in exc.absolute_path)}: {exc.message}"]
    return []
