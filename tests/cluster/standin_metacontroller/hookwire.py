"""Hook request bodies and the reading of hook answers (pure functions, no I/O).

Answers are read as Metacontroller's Go structs would be: a field of the wrong type is an error; in
``strict`` mode (the default for hook version v2) an unknown or duplicated field is an error too, in
``loose`` mode (default for v1) unknown fields are ignored.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any


class HookAnswerError(ValueError):
    """The hook answered 200 with a body Metacontroller would not accept."""


COMPOSITE_FIELDS = {"status", "children", "resyncAfterSeconds", "finalized"}
DECORATOR_FIELDS = {"labels", "annotations", "status", "attachments", "resyncAfterSeconds", "finalized"}
CUSTOMIZE_FIELDS = {"relatedResources"}
RULE_FIELDS = {"apiVersion", "resource", "labelSelector", "namespaceSelector", "namespace", "names"}
SELECTOR_FIELDS = {"matchLabels", "matchExpressions"}
EXPRESSION_FIELDS = {"key", "operator", "values"}


def unmarshal_mode(hook: dict[str, Any]) -> str:
    """``strict`` or ``loose``: the webhook's responseUnMarshallMode, else by hook version."""
    mode = (hook.get("webhook") or {}).get("responseUnMarshallMode")
    if mode in ("strict", "loose"):
        return mode
    return "strict" if hook.get("version") == "v2" else "loose"


def hook_version(hook: dict[str, Any] | None) -> str:
    return (hook or {}).get("version") or "v1"


# ----------------------------------------------------------------------------------------------
# Requests


def composite_request(
    controller: dict, parent: dict, children: dict, related: dict, finalizing: bool
) -> dict[str, Any]:
    return {
        "controller": controller,
        "parent": parent,
        "children": children,
        "related": related,
        "finalizing": finalizing,
    }


def decorator_request(
    controller: dict, obj: dict, attachments: dict, related: dict, finalizing: bool
) -> dict[str, Any]:
    return {
        "controller": controller,
        "object": obj,
        "attachments": attachments,
        "related": related,
        "finalizing": finalizing,
    }


def customize_request(controller: dict, parent: dict) -> dict[str, Any]:
    return {"controller": controller, "parent": parent}


# ----------------------------------------------------------------------------------------------
# Answers


@dataclass(frozen=True)
class CompositeAnswer:
    status: dict[str, Any] | None
    children: list[dict[str, Any]]
    resync_after_seconds: float = 0.0
    finalized: bool = False


@dataclass(frozen=True)
class DecoratorAnswer:
    labels: dict[str, str | None] = field(default_factory=dict)
    annotations: dict[str, str | None] = field(default_factory=dict)
    status: dict[str, Any] | None = None
    attachments: list[dict[str, Any]] = field(default_factory=list)
    resync_after_seconds: float = 0.0
    finalized: bool = False


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise HookAnswerError(f"duplicate field {key!r} in the hook's answer")
        result[key] = value
    return result


def decode(body: bytes | str, mode: str) -> dict[str, Any]:
    """The answer's JSON object; duplicate fields are refused in strict mode."""
    try:
        if mode == "strict":
            value = json.loads(body, object_pairs_hook=_no_duplicates)
        else:
            value = json.loads(body)
    except HookAnswerError:
        raise
    except (ValueError, UnicodeDecodeError) as err:
        raise HookAnswerError(f"the hook's answer is not JSON: {err}") from None
    if not isinstance(value, dict):
        raise HookAnswerError(f"the hook's answer must be a JSON object, got {type(value).__name__}")
    return value


def _check_fields(value: dict[str, Any], known: set[str], mode: str, where: str) -> None:
    if mode != "strict":
        return
    unknown = sorted(set(value) - known)
    if unknown:
        raise HookAnswerError(f"unknown field(s) {unknown} in {where} (strict mode; known: {sorted(known)})")


def _resync(value: Any) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise HookAnswerError(f"resyncAfterSeconds must be a number, got {value!r}")
    return float(value)


def _bool(value: Any, name: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise HookAnswerError(f"{name} must be a boolean, got {value!r}")
    return value


def _status(value: Any) -> dict[str, Any] | None:
    if value is None or isinstance(value, dict):
        return value
    raise HookAnswerError(f"status must be an object or null, got {type(value).__name__}")


def _objects(value: Any, name: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise HookAnswerError(f"{name} must be a list of objects, got {type(value).__name__}")
    for index, obj in enumerate(value):
        if not isinstance(obj, dict):
            raise HookAnswerError(f"{name}[{index}] must be an object")
        for required in ("apiVersion", "kind"):
            if not isinstance(obj.get(required), str) or not obj[required]:
                raise HookAnswerError(f"{name}[{index}]: Object '{required}' is missing")
    return value


def _string_map(value: Any, name: str) -> dict[str, str | None]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(v is None or isinstance(v, str) for v in value.values()):
        raise HookAnswerError(f"{name} must map strings to strings or null")
    return value


def parse_composite(body: bytes | str, mode: str) -> CompositeAnswer:
    value = decode(body, mode)
    _check_fields(value, COMPOSITE_FIELDS, mode, "the sync answer")
    return CompositeAnswer(
        status=_status(value.get("status")),
        children=_objects(value.get("children"), "children"),
        resync_after_seconds=_resync(value.get("resyncAfterSeconds")),
        finalized=_bool(value.get("finalized"), "finalized"),
    )


def parse_decorator(body: bytes | str, mode: str) -> DecoratorAnswer:
    value = decode(body, mode)
    _check_fields(value, DECORATOR_FIELDS, mode, "the sync answer")
    return DecoratorAnswer(
        labels=_string_map(value.get("labels"), "labels"),
        annotations=_string_map(value.get("annotations"), "annotations"),
        status=_status(value.get("status")),
        attachments=_objects(value.get("attachments"), "attachments"),
        resync_after_seconds=_resync(value.get("resyncAfterSeconds")),
        finalized=_bool(value.get("finalized"), "finalized"),
    )


def _check_selector(selector: Any, mode: str, where: str) -> None:
    if selector is None:
        return
    if not isinstance(selector, dict):
        raise HookAnswerError(f"{where} must be an object")
    _check_fields(selector, SELECTOR_FIELDS, mode, where)
    if not isinstance(selector.get("matchLabels") or {}, dict):
        raise HookAnswerError(f"{where}.matchLabels must be an object")
    expressions = selector.get("matchExpressions") or []
    if not isinstance(expressions, list):
        raise HookAnswerError(f"{where}.matchExpressions must be a list")
    for index, expression in enumerate(expressions):
        if not isinstance(expression, dict):
            raise HookAnswerError(f"{where}.matchExpressions[{index}] must be an object")
        _check_fields(expression, EXPRESSION_FIELDS, mode, f"{where}.matchExpressions[{index}]")


def parse_customize(body: bytes | str, mode: str) -> list[dict[str, Any]]:
    """The relatedResources rules, each checked for shape (see related.selection for meaning)."""
    value = decode(body, mode)
    _check_fields(value, CUSTOMIZE_FIELDS, mode, "the customize answer")
    rules = value.get("relatedResources") or []
    if not isinstance(rules, list):
        raise HookAnswerError("relatedResources must be a list")
    for index, rule in enumerate(rules):
        where = f"relatedResources[{index}]"
        if not isinstance(rule, dict):
            raise HookAnswerError(f"{where} must be an object")
        _check_fields(rule, RULE_FIELDS, mode, where)
        for required in ("apiVersion", "resource"):
            if not isinstance(rule.get(required), str) or not rule[required]:
                raise HookAnswerError(f"{where}.{required} is missing")
        _check_selector(rule.get("labelSelector"), mode, f"{where}.labelSelector")
        _check_selector(rule.get("namespaceSelector"), mode, f"{where}.namespaceSelector")
        if not isinstance(rule.get("namespace") or "", str):
            raise HookAnswerError(f"{where}.namespace must be a string")
        names = rule.get("names") or []
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise HookAnswerError(f"{where}.names must be a list of strings")
    return rules
