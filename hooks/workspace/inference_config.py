"""The Workspace's `inference.config` ConfigMap, checked by the hook before any pod starts.

The launcher turns the ConfigMap's inference_config.yaml into SGLang flags when the pod starts
(workload_contract/inference_config.py). The hook runs the same translation on the ConfigMap it asks Metacontroller
to relate, so a `vllm:` key without an SGLang equivalent, or an `sglang:` flag that would move the
server off loopback, is reported on the Workspace naming the key, instead of a crash-looping pod.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hooks.workspace.planning import PresetServing
from hooks.workspace.validation import Problem
from workload_contract.inference_config import RuntimeConfigError, flags_from_text

CONFIG_KEY = "inference_config.yaml"
# Where the pod mounts the ConfigMap (children/workload.py's CONFIG_DIR): a chat template kept in the
# same ConfigMap is read from there.
MOUNT_DIR = Path("/mnt/config")


def related_rule(parent: dict[str, Any]) -> dict[str, Any] | None:
    """The customize hook's rule relating the Workspace's inference.config ConfigMap, if it names one."""
    name = (parent.get("inference") or {}).get("config")
    if not isinstance(name, str) or not name:
        return None
    namespace = (parent.get("metadata") or {}).get("namespace", "default")
    return {"apiVersion": "v1", "resource": "configmaps", "namespace": namespace, "names": [name]}


def problems(plan: PresetServing, configmaps: dict[str, dict[str, Any]]) -> list[Problem]:
    """What keeps the ConfigMap (related objects by name) from starting the model server; [] when it can."""
    if not plan.config:
        return []
    configmap = configmaps.get(plan.config)
    if configmap is None:
        return [
            Problem(
                "inference.config",
                f"ConfigMap {plan.config!r} does not exist in this namespace; create it with a key {CONFIG_KEY} "
                "or remove inference.config",
            )
        ]
    text = (configmap.get("data") or {}).get(CONFIG_KEY)
    if text is None:
        return [Problem("inference.config", f"ConfigMap {plan.config!r} has no key {CONFIG_KEY}; add it")]
    try:
        flags_from_text(text, plan.runtime, plan.gpus_per_node * plan.nodes, MOUNT_DIR, None, CONFIG_KEY)
    except RuntimeConfigError as e:
        return [Problem("inference.config", f"ConfigMap {plan.config!r}: {e}")]
    return []
