"""`python -m hooks docs`: rewrite README.md's generated sections from their sources.

The Workspace field reference comes from the CRD schema (metacontroller/workspace-crd.yaml), the
preset and SKU tables from the catalogues (hooks/data/*.yaml). Each section sits between
`<!-- BEGIN GENERATED: <name> -->` and `<!-- END GENERATED: <name> -->`; everything else in the
README is left as it is. Stdlib + pyyaml only.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import yaml

from hooks.workspace import catalog

BEGIN = "<!-- BEGIN GENERATED: {} -->"
END = "<!-- END GENERATED: {} -->"
_IMMUTABLE_RULE = re.compile(r"^self(\.[A-Za-z.]+)? == oldSelf(\.[A-Za-z.]+)?$")


class DocsError(Exception):
    """The README lacks a section's markers, or has them more than once or out of order."""


def _cell(text: object) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _type(schema: dict) -> str:
    kind = schema.get("type", "object")
    if kind == "array":
        return f"[]{_type(schema.get('items') or {})}"
    if kind == "object" and "additionalProperties" in schema:
        return f"map[string]{_type(schema['additionalProperties'])}"
    return kind


def _constraints(schema: dict, immutable: bool) -> list[str]:
    out = []
    if "enum" in schema:
        out.append("one of " + ", ".join(f"`{v}`" for v in schema["enum"]))
    if "minimum" in schema and "maximum" in schema:
        out.append(f"{schema['minimum']}..{schema['maximum']}")
    elif "minimum" in schema:
        out.append(f"at least {schema['minimum']}")
    elif "maximum" in schema:
        out.append(f"at most {schema['maximum']}")
    if "maxLength" in schema:
        out.append(f"at most {schema['maxLength']} chars")
    if "maxItems" in schema:
        out.append(f"at most {schema['maxItems']} items")
    if "pattern" in schema:
        out.append(f"pattern `{schema['pattern']}`")
    items = schema.get("items") or {}
    if schema.get("type") == "array" and items.get("type") not in (None, "object", "array"):
        out += [f"each {c}" for c in _constraints(items, False)]
    if immutable:
        out.append("immutable")
    return out


def _immutable_children(schema: dict) -> set[str]:
    """Fields made immutable by `self.x == oldSelf.x` rules on `schema` ("" = the object itself)."""
    fields = set()
    for rule in schema.get("x-kubernetes-validations") or []:
        m = _IMMUTABLE_RULE.match(rule.get("rule", ""))
        if m and m.group(1) == m.group(2):
            fields.add((m.group(1) or "")[1:])
    return fields


def _rules(schema: dict) -> list[str]:
    return [
        r["message"]
        for r in schema.get("x-kubernetes-validations") or []
        if "message" in r and not _IMMUTABLE_RULE.match(r.get("rule", ""))
    ]


def _walk(schema: dict, path: str) -> Iterator[tuple[str, dict]]:
    yield path, schema
    target = schema.get("items") if schema.get("type") == "array" else schema
    for name, sub in ((target or {}).get("properties") or {}).items():
        yield from _walk(sub, f"{path}[].{name}" if schema.get("type") == "array" else f"{path}.{name}")


def workspace_fields(crd: dict) -> str:
    """A Markdown table of every Workspace field the CRD schema admits, with its constraints and rules."""
    version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
    root = version["schema"]["openAPIV3Schema"]
    lines = [
        f"Generated from `{crd['metadata']['name']}` ({crd['spec']['group']}/{version['name']}) by `python -m hooks docs`.",
        "",
        "| Field | Type | Default | Constraints | Description |",
        "|---|---|---|---|---|",
    ]
    frozen_paths = _frozen_paths(root, "")
    for top in ("resource", "inference", "tuning", "spec", "status"):
        for path, schema in _walk(root["properties"][top], top):
            constraints = _constraints(schema, path in frozen_paths)
            required = _required(root, path)
            if required:
                constraints.insert(0, "required")
            description = " ".join([schema.get("description", "")] + [f"Rule: {m}." for m in _rules(schema)]).strip()
            default = schema.get("default")
            lines.append(
                "| `{}` | {} | {} | {} | {} |".format(
                    path,
                    _cell(_type(schema)),
                    f"`{default}`" if default is not None else "",
                    _cell("; ".join(constraints)),
                    _cell(description),
                )
            )
    top_rules = _rules(root)
    if top_rules:
        lines += ["", "Whole-object rules:", ""] + [f"- {m}" for m in top_rules]
    return "\n".join(lines)


def _frozen_paths(schema: dict, path: str) -> set[str]:
    """Dotted paths made immutable by rules such as `self.preset.name == oldSelf.preset.name`."""
    out = {f"{path}.{f}".lstrip(".") for f in _immutable_children(schema) if f}
    target = schema.get("items") if schema.get("type") == "array" else schema
    for name, sub in ((target or {}).get("properties") or {}).items():
        child = f"{path}[].{name}" if schema.get("type") == "array" else f"{path}.{name}"
        out |= _frozen_paths(sub, child.lstrip("."))
    return out


def _required(root: dict, path: str) -> bool:
    parts = path.replace("[]", "").split(".")
    node = root
    for part in parts[:-1]:
        node = node.get("items", node) if node.get("type") == "array" else node
        node = (node.get("properties") or {}).get(part, {})
    node = node.get("items", node) if node.get("type") == "array" else node
    return parts[-1] in (node.get("required") or [])


def _runtime(sku: catalog.Sku) -> str:
    if not sku.nvidia:
        return "not supported (not NVIDIA)"
    return "sglang" if sku.runs_sglang else "transformers"


def _num(x: float) -> str:
    return f"{x:g}"


def preset_table() -> str:
    lines = [
        "Generated from `hooks/data/presets.yaml` by `python -m hooks docs`. GPU memory is the total needed to serve (GiB).",
        "",
        "| Preset | Model | GPUs (min) | GPU memory | Weights (GiB) | Context | Multi-node | Weights from | Tuning |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    source = {
        "hf": "HuggingFace",
        "hf-gated": "HuggingFace (gated: modelAccessSecret)",
        "private": "presetOptions.image",
    }
    for p in catalog.presets().values():
        tuning = ", ".join(f"{m} ({_num(n.gpu_memory)} GiB)" for m, n in sorted(p.tuning.items())) or "no"
        lines.append(
            f"| `{p.name}` | {p.hf_repo} | {p.gpus} | {_num(p.gpu_memory)} | {_num(p.weights)} | {p.context_length} "
            f"| {'yes' if p.distributed else 'no'} | {source.get(p.weights_source, p.weights_source)} | {tuning} |"
        )
    return "\n".join(lines)


def sku_table() -> str:
    lines = [
        "Generated from `hooks/data/skus.yaml` by `python -m hooks docs`. SGLang needs compute capability "
        f"{_num(catalog.SGLANG_MIN_COMPUTE_CAPABILITY)} or newer; older NVIDIA GPUs are served by the transformers runtime.",
        "",
        "| Instance type | GPUs | GPU | Memory per GPU (GiB) | Compute capability | Runtime |",
        "|---|---|---|---|---|---|",
    ]
    for s in catalog.skus().values():
        cc = _num(s.compute_capability) if s.compute_capability is not None else "-"
        lines.append(f"| `{s.name}` | {s.gpus} | {s.gpu} | {_num(s.gpu_memory)} | {cc} | {_runtime(s)} |")
    return "\n".join(lines)


def sections(crd_path: Path) -> dict[str, Callable[[], str]]:
    return {
        "workspace-fields": lambda: workspace_fields(yaml.safe_load(crd_path.read_text())),
        "presets": preset_table,
        "skus": sku_table,
    }


def replace_section(text: str, name: str, body: str) -> str:
    begin, end = BEGIN.format(name), END.format(name)
    if text.count(begin) != 1 or text.count(end) != 1:
        raise DocsError(f"README needs exactly one {begin} and one {end}")
    head, rest = text.split(begin)
    _, tail = rest.split(end)
    if end in head:
        raise DocsError(f"{end} comes before {begin}")
    return f"{head}{begin}\n{body}\n{end}{tail}"


def render_readme(text: str, crd_path: Path) -> str:
    for name, build in sections(crd_path).items():
        text = replace_section(text, name, build())
    return text


def run(readme: str, crd: str, check: bool = False, out=sys.stdout, err=sys.stderr) -> int:
    """Rewrite `readme` in place (or with `check`, only report whether it is current). Exit code."""
    path = Path(readme)
    try:
        current = path.read_text()
        fresh = render_readme(current, Path(crd))
    except (OSError, DocsError, yaml.YAMLError) as e:
        print(f"{readme}: {e}", file=err)
        return 2
    if fresh == current:
        print(f"{readme}: generated sections are up to date", file=out)
        return 0
    if check:
        print(f"{readme}: generated sections are out of date; run `python -m hooks docs`", file=err)
        return 1
    path.write_text(fresh)
    print(f"{readme}: generated sections rewritten", file=out)
    return 0
