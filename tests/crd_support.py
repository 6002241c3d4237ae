"""The Workspace CRD as the API server applies it, offline: strict schema, defaults, CEL rules.

Also the objects the CRD must refuse and the changes its transition rules forbid, shared by
tests/test_crds.py (cel-python) and tests/cluster/ (a real API server).
"""

from __future__ import annotations

import copy

import celpy
import yaml
from workspace_support import REPO, workspace


def load_yaml(name: str) -> dict:
    return yaml.safe_load((REPO / "metacontroller" / name).read_text())


def strict(schema: dict) -> dict:
    """The schema as the API server applies it with strict field validation: unknown fields are errors."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if not isinstance(node, dict):
            return
        if (
            "properties" in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
            and "additionalProperties" not in node
        ):
            node["additionalProperties"] = False
        for key in ("properties",):
            for child in (node.get(key) or {}).values():
                walk(child)
        for key in ("items", "additionalProperties"):
            walk(node.get(key))

    walk(schema)
    return schema


def workspace_schema() -> dict:
    crd = load_yaml("workspace-crd.yaml")
    return strict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


_env = celpy.Environment()


def with_defaults(schema: dict, obj):
    """Apply the schema's defaults as the API server does before it evaluates CEL rules."""
    obj = copy.deepcopy(obj)
    if isinstance(obj, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key not in obj and "default" in sub:
                obj[key] = copy.deepcopy(sub["default"])
            if key in obj:
                obj[key] = with_defaults(sub, obj[key])
    if isinstance(obj, list) and "items" in schema:
        obj = [with_defaults(schema["items"], item) for item in obj]
    return obj


def cel_violations(schema: dict, obj, old=None, path: str = "") -> list[str]:
    """Evaluate every x-kubernetes-validations rule that applies to `obj` (transition rules only with `old`)."""
    if not path:
        obj = with_defaults(schema, obj)
        old = with_defaults(schema, old) if old is not None else None
    out = []
    for rule in schema.get("x-kubernetes-validations", []):
        transition = "oldSelf" in rule["rule"]
        if transition and old is None:
            continue
        activation = {"self": celpy.json_to_cel(obj)}
        if transition:
            activation["oldSelf"] = celpy.json_to_cel(old)
        result = _env.program(_env.compile(rule["rule"])).evaluate(activation)
        if isinstance(result, celpy.CELEvalError):
            raise AssertionError(f"rule at {path or '.'} failed to evaluate: {rule['rule']}: {result}")
        if not result:
            out.append(f"{path or '.'}: {rule['message']}")
    if isinstance(obj, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key in obj:
                sub_old = old.get(key) if isinstance(old, dict) else None
                out += cel_violations(sub, obj[key], sub_old, f"{path}.{key}")
    if isinstance(obj, list) and "items" in schema:
        for i, item in enumerate(obj):
            out += cel_violations(schema["items"], item, None, f"{path}[{i}]")
    return out


def schema_root() -> dict:
    return load_yaml("workspace-crd.yaml")["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


TUNING = {
    "preset": {"name": "phi-3-mini-128k-instruct"},
    "method": "qlora",
    "input": {"urls": ["https://example.com/d.parquet"]},
    "output": {"image": "r.io/x:1", "imagePushSecret": "push"},
}


REJECTED_OBJECTS = [
    (workspace(inference=None), "exactly one of inference or tuning"),
    (workspace(tuning=TUNING), "exactly one of inference or tuning"),
    (
        workspace(inference={"preset": {"name": "phi-2"}, "template": {"spec": {}}}),
        "inference.preset or inference.template",
    ),
    (
        workspace(
            inference={
                "preset": {"name": "phi-2"},
                "adapters": [
                    {"source": {"name": "a", "image": "r.io/a"}},
                    {"source": {"name": "a", "image": "r.io/b"}},
                ],
            }
        ),
        "must be unique",
    ),
    (
        workspace(
            inference={
                "preset": {"name": "phi-2"},
                "adapters": [{"source": {"name": "a", "image": "r.io/a"}, "strength": "1.5"}],
            }
        ),
        "between 0 and 1",
    ),
    (
        workspace(
            inference={
                "preset": {"name": "phi-2"},
                "adapters": [{"source": {"name": "a", "image": "r.io/a"}, "strength": "strong"}],
            }
        ),
        "between 0 and 1",
    ),
    (workspace(inference=None, tuning={**TUNING, "output": {"image": "r.io/x:1"}}), "needs imagePushSecret"),
    (workspace(metadata={"name": "7b-chat", "namespace": "team"}), "must be a DNS-1035 label"),
    (
        workspace(resource={"labelSelector": {"matchLabels": {"a": "b"}}, "partition": {"mode": "mig"}}),
        "mode mig needs a profile",
    ),
    (
        workspace(inference=None, tuning={**TUNING, "input": {"urls": ["https://e.com/a"], "image": "r.io/d:1"}}),
        "exactly one of tuning.input",
    ),
]


IMMUTABLE_CHANGES = [
    (lambda w: w["inference"]["preset"].update(name="phi-2"), "inference.preset.name is immutable"),
    (lambda w: w["resource"].update(instanceType="Standard_NC48ads_A100_v4"), "instanceType is immutable"),
    (lambda w: w["resource"].update(count=2), "count is immutable"),
    (lambda w: w["resource"].update(labelSelector={"matchLabels": {"apps": "other"}}), "labelSelector is immutable"),
    (lambda w: w["resource"].update(partition={"mode": "mig", "profile": "1g.10gb"}), "partition is immutable"),
]
