"""Checks on a Workspace that need no catalogue: names, image references, secrets, adapters, URLs.

Each problem names the field path and says how to fix it. The same rules that the CRD states
in CEL are checked here again, because `render` runs without an API server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from hooks import naming
from hooks.naming import MAX_WORKSPACE_NAME, is_dns_label, is_dns_subdomain
from hooks.workspace.api import (
    MAX_ADAPTERS,
    DataSource,
    InferenceSpec,
    LabelSelector,
    PresetSpec,
    TuningSpec,
    Workspace,
    field_path,
)
from workload_contract.adapter_names import COMBINED_ADAPTER
from workload_contract.url_policy import url_problem


@dataclass(frozen=True, order=True)
class Problem:
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


# The docker/OCI reference grammar (distribution/reference), written out.
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
IMAGE_REFERENCE = re.compile(rf"^{_NAME}(?::{_TAG})?(?:@{_DIGEST})?$")
_PLACEHOLDER = re.compile(r"[<>]|_HERE\b|\bYOUR[_ ]|ACR_REPO|REGISTRY_NAME", re.IGNORECASE)


def image_problem(ref: str) -> str | None:
    if _PLACEHOLDER.search(ref):
        return f"{ref!r} is a placeholder from the Kaito docs; put the image you built or pushed here"
    if len(ref) > 255 or not IMAGE_REFERENCE.match(ref):
        return (
            f"{ref!r} is not a valid image reference; expected registry/repository[:tag][@digest] "
            "with a lowercase repository, e.g. myregistry.azurecr.io/adapters/phi-3:0.0.1"
        )
    return None


# What an adapter's files may come from: storage the Workspace's namespace already owns. Everything else a
# volume can be (hostPath, a Secret, a projected token, CSI drivers such as a secrets store, network mounts)
# would have the fetch Job, which Metacontroller creates, copy it into the adapter folder for the user.
ADAPTER_VOLUME_TYPES = ("persistentVolumeClaim", "configMap", "image")


def adapter_volume_problem(volume: dict[str, Any]) -> str | None:
    """Why this volumeSource cannot hold an adapter, or None."""
    kinds = sorted(volume)
    if len(kinds) == 1 and kinds[0] in ADAPTER_VOLUME_TYPES and isinstance(volume[kinds[0]], dict):
        return None
    return (
        f"volume type {', '.join(kinds) or '(none)'} is not allowed for adapters; use exactly one of "
        f"{', '.join(ADAPTER_VOLUME_TYPES)} (or source.image)"
    )


def _secret_problems(names: list[str] | None, path: str) -> list[Problem]:
    out = []
    for i, name in enumerate(names or []):
        if not is_dns_subdomain(name):
            out.append(Problem(f"{path}[{i}]", f"{name!r} is not a valid Secret name (lowercase DNS-1123 subdomain)"))
    return out


def shape_problems(obj: dict) -> tuple[Workspace | None, list[Problem]]:
    """Parse a Workspace object; on failure return one problem per pydantic error, field-named."""
    try:
        return Workspace.model_validate(obj), []
    except ValidationError as err:
        problems = []
        for e in err.errors():
            loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            msg = e["msg"]
            if e["type"] == "extra_forbidden":
                msg = "unknown field (check its spelling against the Workspace reference)"
            elif e["type"] == "too_long" and loc and loc[-1] == "adapters":
                msg = f"at most {MAX_ADAPTERS} adapters are allowed"
            problems.append(Problem(field_path(loc) or "(workspace)", msg))
        return None, sorted(set(problems))


def parse_workspace(obj: dict[str, Any]) -> tuple[Workspace | None, list[Problem]]:
    """Shape and field checks together: a Workspace ready to plan, or every problem found."""
    ws, problems = shape_problems({k: v for k, v in obj.items() if k != "status"})
    if ws is None:
        return None, problems
    problems = field_problems(ws)
    if problems:
        return None, problems
    return ws, []


def field_problems(ws: Workspace) -> list[Problem]:
    problems: list[Problem] = []
    name = ws.metadata.name
    if not is_dns_label(name):
        problems.append(Problem("metadata.name", f"{name!r} must be a DNS-1123 label (lowercase letters, digits, '-')"))
    elif not name[0].isalpha():
        # The same rule as the CRD's CEL: the Services take the Workspace's name, and the API server
        # refuses a Service name that is not a DNS-1035 label.
        problems.append(
            Problem(
                "metadata.name",
                f"{name!r} must be a DNS-1035 label (start with a lowercase letter): the Workspace's Services "
                "take its name; e.g. rename 7b-chat to chat-7b",
            )
        )
    elif len(name) > MAX_WORKSPACE_NAME:
        problems.append(
            Problem(
                "metadata.name",
                f"{name!r} is {len(name)} characters; at most {MAX_WORKSPACE_NAME} are allowed so that the "
                "StatefulSet, its pods and the '<name>-headless' Service get valid names",
            )
        )

    if (ws.inference is None) == (ws.tuning is None):
        which = "neither" if ws.inference is None else "both"
        problems.append(Problem("inference", f"exactly one of inference or tuning must be set, not {which}"))

    problems += _resource_problems(ws)
    if ws.inference is not None:
        problems += _inference_problems(ws, ws.inference)
    if ws.tuning is not None:
        problems += _tuning_problems(ws, ws.tuning)
    return problems


def label_selector_problems(sel: LabelSelector, path: str) -> list[Problem]:
    """What the API server would refuse in the children built from this selector (node affinity, Machine labels)."""
    out = []
    for key, value in (sel.matchLabels or {}).items():
        field = f"{path}.matchLabels[{key!r}]"
        for problem in (naming.label_key_problem(key), naming.label_value_problem(value)):
            if problem:
                out.append(Problem(field, problem))
    for i, req in enumerate(sel.matchExpressions or []):
        field = f"{path}.matchExpressions[{i}]"
        if problem := naming.label_key_problem(req.key):
            out.append(Problem(f"{field}.key", problem))
        if req.operator in ("In", "NotIn") and not req.values:
            out.append(Problem(f"{field}.values", f"operator {req.operator} needs at least one value"))
        if req.operator in ("Exists", "DoesNotExist") and req.values:
            out.append(Problem(f"{field}.values", f"operator {req.operator} takes no values; remove them"))
        for j, value in enumerate(req.values or []):
            if problem := naming.label_value_problem(value):
                out.append(Problem(f"{field}.values[{j}]", problem))
    return out


def _resource_problems(ws: Workspace) -> list[Problem]:
    out = []
    sel = ws.resource.labelSelector
    if not sel.matchLabels and not sel.matchExpressions:
        out.append(Problem("resource.labelSelector", "must select the GPU nodes, e.g. matchLabels: {apps: my-model}"))
    out += label_selector_problems(sel, "resource.labelSelector")
    for i, node in enumerate(ws.resource.preferredNodes or []):
        if not is_dns_subdomain(node):
            out.append(Problem(f"resource.preferredNodes[{i}]", f"{node!r} is not a valid node name"))
    return out


def _preset_option_problems(preset: PresetSpec, path: str) -> list[Problem]:
    out: list[Problem] = []
    opts = preset.presetOptions
    if opts is None:
        return out
    if opts.image is not None and (p := image_problem(opts.image)):
        out.append(Problem(f"{path}.presetOptions.image", p))
    out += _secret_problems(opts.imagePullSecrets, f"{path}.presetOptions.imagePullSecrets")
    if opts.modelAccessSecret is not None and not is_dns_subdomain(opts.modelAccessSecret):
        out.append(
            Problem(f"{path}.presetOptions.modelAccessSecret", f"{opts.modelAccessSecret!r} is not a valid Secret name")
        )
    return out


def _inference_problems(ws: Workspace, inf: InferenceSpec) -> list[Problem]:
    out: list[Problem] = []
    if (inf.preset is None) == (inf.template is None):
        which = "neither" if inf.preset is None else "both"
        out.append(
            Problem(
                "inference.preset", f"exactly one of inference.preset or inference.template must be set, not {which}"
            )
        )
    if inf.preset is not None:
        out += _preset_option_problems(inf.preset, "inference.preset")
    if inf.template is not None and not (inf.template.get("spec") or {}).get("containers"):
        out.append(Problem("inference.template.spec.containers", "a pod template needs at least one container"))
    if inf.config is not None and not is_dns_subdomain(inf.config):
        out.append(Problem("inference.config", f"{inf.config!r} is not a valid ConfigMap name"))

    out += _max_lora_rank_problems(ws)
    seen: dict[str, int] = {}
    for i, adapter in enumerate(ws.adapters):
        path = f"inference.adapters[{i}]"
        src = adapter.source
        if src is None or not src.name:
            out.append(Problem(f"{path}.source.name", "every adapter needs a source with a name"))
            continue
        # The name becomes an init container name `adapter-<name>`: a DNS-1123 label of at most 63.
        if not is_dns_label(src.name, max_len=55):
            out.append(
                Problem(f"{path}.source.name", f"{src.name!r} must be a DNS-1123 label of at most 55 characters")
            )
        if src.name in seen:
            out.append(
                Problem(f"{path}.source.name", f"duplicate adapter name {src.name!r} (also adapters[{seen[src.name]}])")
            )
        seen.setdefault(src.name, i)
        if src.name == COMBINED_ADAPTER and len(ws.adapters) > 1:
            out.append(
                Problem(
                    f"{path}.source.name",
                    f"{COMBINED_ADAPTER!r} is reserved: with several adapters it names the weighted sum of all of them "
                    "(what /chat applies by default); rename the adapter",
                )
            )
        if src.urls:
            out.append(Problem(f"{path}.source.urls", "adapters cannot be downloaded from URLs; use source.image"))
        if (src.image is None) == (src.volumeSource is None):
            out.append(Problem(f"{path}.source.image", "set exactly one of source.image or source.volumeSource"))
        elif src.image is not None and (p := image_problem(src.image)):
            out.append(Problem(f"{path}.source.image", p))
        elif src.volumeSource is not None and (p := adapter_volume_problem(src.volumeSource)):
            out.append(Problem(f"{path}.source.volumeSource", p))
        out += _secret_problems(src.imagePullSecrets, f"{path}.source.imagePullSecrets")
        if adapter.strength is not None:
            try:
                strength = float(adapter.strength)
            except ValueError:
                strength = None
            if strength is None or not 0.0 <= strength <= 1.0:
                out.append(
                    Problem(f"{path}.strength", f'{adapter.strength!r} must be a number between 0 and 1, e.g. "0.5"')
                )
    return out


# The largest adapter rank the runtime makes room for at start (live adapters: the launcher's --max-lora-rank).
# Changing it restarts the model server; adapters up to it come and go without one.
MAX_LORA_RANK_ANNOTATION = "kaito.sh/max-lora-rank"
MAX_LORA_RANK_LIMIT = 1024


def max_lora_rank(ws: Workspace) -> int | None:
    raw = ws.annotations.get(MAX_LORA_RANK_ANNOTATION)
    return int(raw) if raw is not None and raw.strip().isdigit() else None


def _max_lora_rank_problems(ws: Workspace) -> list[Problem]:
    raw = ws.annotations.get(MAX_LORA_RANK_ANNOTATION)
    if raw is None:
        return []
    rank = max_lora_rank(ws)
    if rank is None or not 1 <= rank <= MAX_LORA_RANK_LIMIT:
        return [
            Problem(
                f"metadata.annotations[{MAX_LORA_RANK_ANNOTATION}]",
                f"{raw!r} must be a whole number from 1 to {MAX_LORA_RANK_LIMIT} (the largest adapter rank "
                'to make room for), e.g. "128"; remove the annotation for the default 64',
            )
        ]
    return []


def _input_problems(src: DataSource, path: str) -> list[Problem]:
    out: list[Problem] = []
    given = [k for k in ("urls", "image", "volumeSource") if getattr(src, k)]
    if len(given) != 1:
        out.append(
            Problem(path, f"set exactly one of urls, image or volumeSource (found: {', '.join(given) or 'none'})")
        )
    for i, url in enumerate(src.urls or []):
        if p := url_problem(url) or _shell_syntax(url):
            out.append(Problem(f"{path}.urls[{i}]", p))
    if src.image is not None and (p := image_problem(src.image)):
        out.append(Problem(f"{path}.image", p))
    out += _secret_problems(src.imagePullSecrets, f"{path}.imagePullSecrets")
    return out


_SHELL_SYNTAX = re.compile(r"`|\$\(|\$\{")


def _shell_syntax(url: str) -> str | None:
    """No shell ever sees a URL, but one carrying command substitution is an attack, not a dataset."""
    if _SHELL_SYNTAX.search(url):
        return "the URL contains shell command substitution (`...`, $(...) or ${...}); give the plain dataset URL"
    return None


def _tuning_problems(ws: Workspace, t: TuningSpec) -> list[Problem]:
    out = _preset_option_problems(t.preset, "tuning.preset")
    if ws.resource.count > 1:
        out.append(Problem("resource.count", "tuning runs on one node; set resource.count: 1"))
    if t.config is not None and not is_dns_subdomain(t.config):
        out.append(Problem("tuning.config", f"{t.config!r} is not a valid ConfigMap name"))
    out += _input_problems(t.input, "tuning.input")
    o = t.output
    if (o.image is None) == (o.volumeSource is None):
        out.append(Problem("tuning.output", "set exactly one of output.image or output.volumeSource"))
    if o.image is not None:
        if p := image_problem(o.image):
            out.append(Problem("tuning.output.image", p))
        if not o.imagePushSecret:
            out.append(
                Problem(
                    "tuning.output.imagePushSecret",
                    "output.image needs imagePushSecret, a docker-registry Secret with push rights",
                )
            )
    if o.imagePushSecret is not None:
        if _PLACEHOLDER.search(o.imagePushSecret):
            out.append(
                Problem(
                    "tuning.output.imagePushSecret",
                    f"{o.imagePushSecret!r} is a placeholder from the Kaito docs; name your docker-registry Secret",
                )
            )
        elif not is_dns_subdomain(o.imagePushSecret):
            out.append(Problem("tuning.output.imagePushSecret", f"{o.imagePushSecret!r} is not a valid Secret name"))
    return out
