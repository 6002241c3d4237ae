"""The Workspace API (kaito.sh/v1alpha1 and Kaito v0.12's v1beta1, one schema) as pydantic models.

Field names mirror Kaito's CRD exactly: there is no `spec` wrapper, `resource`, `inference` and
`tuning` sit beside `metadata`. These models check shape and types (what the CRD schema checks);
what needs the preset and SKU catalogues is judged in hooks/workspace/validation.py and planning.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

API_VERSION: Final = "kaito.sh/v1alpha1"
# The CRD serves both with the same schema (conversion: None); Metacontroller watches v1alpha1, and
# `render` reads files written in either.
API_VERSIONS: Final = ("kaito.sh/v1alpha1", "kaito.sh/v1beta1")
DEFAULT_INSTANCE_TYPE = "Standard_NC24ads_A100_v4"
MAX_ADAPTERS = 10


class _Spec(BaseModel):
    # Unknown fields are errors: the API server would silently prune a misspelt field, and a
    # user running `render` deserves to hear about it.
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class LabelSelectorRequirement(_Spec):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] | None = None


class LabelSelector(_Spec):
    matchLabels: dict[str, str] | None = None
    matchExpressions: list[LabelSelectorRequirement] | None = None


class PartitionSpec(_Spec):
    """Kaito v0.12's GPU partitioning: one MIG slice per replica (mode mig), or whole accelerators."""

    mode: Literal["mig", "accelerator"]
    profile: str | None = Field(default=None, pattern=r"^[1-7]g\.[0-9]+gb$")
    count: int | None = Field(default=None, ge=1, le=8)


class ResourceSpec(_Spec):
    # The CRD's maximum too: the hook refuses more whoever wrote the object (one Machine, one GPU node each).
    count: int = Field(default=1, ge=1, le=64)
    instanceType: str = DEFAULT_INSTANCE_TYPE
    labelSelector: LabelSelector
    preferredNodes: list[str] | None = None
    partition: PartitionSpec | None = None


class PresetOptions(_Spec):
    image: str | None = None
    imagePullSecrets: list[str] | None = None
    # Kaito v1beta1's field, accepted here too: a Secret whose key HF_TOKEN holds a HuggingFace token.
    modelAccessSecret: str | None = None


class PresetSpec(_Spec):
    name: str
    accessMode: Literal["public", "private"] = "public"
    presetOptions: PresetOptions | None = None


class DataSource(_Spec):
    name: str | None = None
    urls: list[str] | None = None
    image: str | None = None
    imagePullSecrets: list[str] | None = None
    volumeSource: dict[str, Any] | None = None


class AdapterSpec(_Spec):
    source: DataSource | None = None
    strength: str | None = None


class InferenceSpec(_Spec):
    preset: PresetSpec | None = None
    template: dict[str, Any] | None = None
    config: str | None = None
    adapters: list[AdapterSpec] | None = Field(default=None, max_length=MAX_ADAPTERS)


class DataDestination(_Spec):
    image: str | None = None
    imagePushSecret: str | None = None
    volumeSource: dict[str, Any] | None = None


class TuningSpec(_Spec):
    preset: PresetSpec
    method: Literal["lora", "qlora"] = "lora"
    config: str | None = None
    input: DataSource
    output: DataDestination


class ObjectMeta(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str
    namespace: str = "default"
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class NamedObject:
    """name, namespace and annotations of a Kaito object, from its metadata (Workspace, InferenceSet)."""

    if TYPE_CHECKING:  # a pydantic field of the model itself, not of this helper
        metadata: ObjectMeta

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @property
    def annotations(self) -> dict[str, str]:
        return self.metadata.annotations or {}


class ScaleSpec(_Spec):
    """Not in Kaito's Workspace: the scale subresource's replica count (Kubernetes wants it under .spec)."""

    replicas: int = Field(default=1, ge=0, le=64)


class Workspace(NamedObject, BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    apiVersion: Literal["kaito.sh/v1alpha1", "kaito.sh/v1beta1"] = API_VERSION
    kind: Literal["Workspace"] = "Workspace"
    metadata: ObjectMeta
    resource: ResourceSpec
    inference: InferenceSpec | None = None
    tuning: TuningSpec | None = None
    spec: ScaleSpec | None = None
    status: dict[str, Any] | None = None

    @property
    def match_labels(self) -> dict[str, str]:
        return dict(self.resource.labelSelector.matchLabels or {})

    @property
    def requested_replicas(self) -> int | None:
        """spec.replicas (the scale subresource), None where the Workspace has no spec."""
        return self.spec.replicas if self.spec is not None else None

    @property
    def preset(self) -> PresetSpec | None:
        if self.tuning is not None:
            return self.tuning.preset
        if self.inference is not None:
            return self.inference.preset
        return None

    @property
    def adapters(self) -> list[AdapterSpec]:
        if self.inference is None:
            return []
        return list(self.inference.adapters or [])


def field_path(loc: tuple[Any, ...]) -> str:
    """Render a pydantic error location as a Kubernetes-style field path: `inference.adapters[0].source.image`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out
