"""Kubernetes label selectors (and Metacontroller's annotation selectors) evaluated in Python."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any


class SelectorError(ValueError):
    """A selector that Kubernetes would refuse (unknown operator, missing values...)."""


def _expression_matches(expression: Mapping[str, Any], values: Mapping[str, str], where: str) -> bool:
    if not isinstance(expression, Mapping):
        raise SelectorError(f"{where}: each matchExpressions entry must be an object")
    key = expression.get("key")
    operator = expression.get("operator")
    wanted = expression.get("values") or []
    if not isinstance(key, str) or not key:
        raise SelectorError(f"{where}: matchExpressions entry needs a key")
    if operator in ("In", "NotIn"):
        if not wanted:
            raise SelectorError(f"{where}: operator {operator} on {key!r} needs values")
        present = key in values and values[key] in wanted
        return present if operator == "In" else not present
    if operator in ("Exists", "DoesNotExist"):
        if wanted:
            raise SelectorError(f"{where}: operator {operator} on {key!r} takes no values")
        return (key in values) == (operator == "Exists")
    raise SelectorError(f"{where}: unknown operator {operator!r} (In, NotIn, Exists, DoesNotExist)")


def matches(
    selector: Mapping[str, Any] | None,
    values: Mapping[str, str] | None,
    match_key: str = "matchLabels",
    where: str = "labelSelector",
) -> bool:
    """Whether ``values`` (labels or annotations) satisfy ``selector``.

    ``None`` and ``{}`` select everything, as for a LabelSelector in Kubernetes' list calls.
    ``match_key`` is ``matchAnnotations`` for a DecoratorController annotationSelector.
    """
    if selector is None:
        return True
    if not isinstance(selector, Mapping):
        raise SelectorError(f"{where} must be an object")
    values = values or {}
    for key, value in (selector.get(match_key) or {}).items():
        if values.get(key) != value:
            return False
    return all(_expression_matches(e, values, where) for e in selector.get("matchExpressions") or [])


def is_empty(selector: Mapping[str, Any] | None) -> bool:
    return not selector or not (selector.get("matchLabels") or selector.get("matchExpressions"))


_SET_TERM = re.compile(r"^\s*([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_terms(text: str) -> list[str]:
    terms, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    terms.append(current)
    return [t.strip() for t in terms if t.strip()]


def parse(text: str) -> dict[str, Any]:
    """A label selector string (``a=b,c!=d,e,!f,g in (x,y),h notin (z)``) as a LabelSelector dict."""
    match_labels: dict[str, str] = {}
    expressions: list[dict[str, Any]] = []
    for term in _split_terms(text or ""):
        if set_term := _SET_TERM.match(term):
            key, op, values = set_term.groups()
            expressions.append(
                {
                    "key": key,
                    "operator": "In" if op == "in" else "NotIn",
                    "values": [v.strip() for v in values.split(",") if v.strip()],
                }
            )
        elif "!=" in term:
            key, value = term.split("!=", 1)
            expressions.append({"key": key.strip(), "operator": "NotIn", "values": [value.strip()]})
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            match_labels[key.strip()] = value.strip()
        elif term.startswith("!"):
            expressions.append({"key": term[1:].strip(), "operator": "DoesNotExist"})
        elif re.fullmatch(r"[A-Za-z0-9_./-]+", term):
            expressions.append({"key": term, "operator": "Exists"})
        else:
            raise SelectorError(f"cannot parse label selector term {term!r}")
    return {"matchLabels": match_labels, "matchExpressions": expressions}
