"""Kaito v0.12's InferenceSet (kaito.sh/v1alpha1 and v1beta1, one schema) as pydantic models.

The template holds a Workspace's `resource` (instanceType, partition) and `inference`; `labelSelector`
becomes the Workspace's resource.labelSelector. Shapes only: the Workspace's own validation and planning
judge the template once it is a Workspace (hooks/inferenceset/workspace.py).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hooks.workspace.api import InferenceSpec, LabelSelector, NamedObject, ObjectMeta, PartitionSpec

API_VERSIONS = ("kaito.sh/v1alpha1", "kaito.sh/v1beta1")
MAX_REPLICAS = 64  # the Workspace's spec.replicas maximum


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class TemplateResource(_Spec):
    instanceType: str | None = None
    partition: PartitionSpec | None = None


class TemplateMeta(BaseModel):
    model_config = ConfigDict(extra="ignore")
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class InferenceSetTemplate(_Spec):
    metadata: TemplateMeta | None = None
    resource: TemplateResource = Field(default_factory=TemplateResource)
    inference: InferenceSpec


class InferenceSetSpec(_Spec):
    template: InferenceSetTemplate
    replicas: int = Field(default=1, ge=0, le=MAX_REPLICAS)
    nodeCountLimit: int = Field(default=0, ge=0)  # 0: no limit
    labelSelector: LabelSelector
    updateStrategy: dict[str, Any] | None = None
    autoUpgrade: dict[str, Any] | None = None


class InferenceSet(NamedObject, BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    apiVersion: Literal["kaito.sh/v1alpha1", "kaito.sh/v1beta1"] = "kaito.sh/v1alpha1"
    kind: Literal["InferenceSet"] = "InferenceSet"
    metadata: ObjectMeta
    spec: InferenceSetSpec
    status: dict[str, Any] | None = None
