"""Writes rendered objects as a kustomize base: one YAML file per object plus
``kustomization.yaml`` listing them (and the namespace), which an overlay can build on."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml


def file_name(obj: dict[str, Any]) -> str:
    """``rollout-clinic.yaml``: kind and name, lowercase."""
    return f"{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"


def dump(obj: dict[str, Any]) -> str:
    """One object as YAML, keys in the order they were built (readable, stable diffs)."""
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, width=100)


def kustomization(objects: Sequence[dict[str, Any]], namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": namespace,
        "resources": [file_name(o) for o in objects],
    }


def write_base(objects: Sequence[dict[str, Any]], namespace: str, out: Path) -> list[Path]:
    """Write the base into ``out`` (created if needed; files this base owns are replaced,
    each atomically); return the paths written, kustomization.yaml last."""
    out.mkdir(parents=True, exist_ok=True)
    documents = [(file_name(o), o) for o in objects]
    documents.append(("kustomization.yaml", kustomization(objects, namespace)))
    written = []
    for name, obj in documents:
        path = out / name
        tmp = path.with_suffix(".yaml.tmp")
        tmp.write_text(dump(obj), encoding="utf-8")
        os.replace(tmp, path)
        written.append(path)
    return written


def load_base(out: Path) -> list[dict[str, Any]]:
    """The objects a base lists, in its order (for tests and for checking a written base)."""
    kust = yaml.safe_load((out / "kustomization.yaml").read_text(encoding="utf-8"))
    return [yaml.safe_load((out / f).read_text(encoding="utf-8")) for f in kust["resources"]]
