"""README.md: its generated sections match the CRD and catalogues, and what it tells a user to run exists."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml
from workspace_support import REPO

from hooks.cli import docs
from hooks.workspace import catalog

README = REPO / "README.md"
CRD = REPO / "metacontroller" / "workspace-crd.yaml"


def readme() -> str:
    return README.read_text()


def test_generated_sections_are_up_to_date():
    assert docs.render_readme(readme(), CRD) == readme(), "README.md is out of date: run `python -m hooks docs`"


def test_docs_check_cli_reports_a_stale_readme_and_changes_nothing(tmp_path):
    stale = tmp_path / "README.md"
    stale.write_text(readme().replace("| `phi-2` |", "| `phi-two` |"))
    before = stale.read_text()

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "hooks", "docs", "--readme", str(stale), "--crd", str(CRD), *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    out = cli("--check")
    assert out.returncode == 1 and "out of date" in out.stderr
    assert stale.read_text() == before
    out = cli()
    assert out.returncode == 0, out.stderr
    assert stale.read_text() == readme()
    assert cli("--check").returncode == 0


def test_docs_refuses_a_readme_without_markers(tmp_path):
    with pytest.raises(docs.DocsError):
        docs.render_readme("# no markers\n", CRD)
    broken = readme().replace(docs.END.format("skus"), "")
    with pytest.raises(docs.DocsError):
        docs.render_readme(broken, CRD)


def _leaf_paths(schema: dict, path: str) -> list[str]:
    out = [path]
    target = schema.get("items") if schema.get("type") == "array" else schema
    for name, sub in ((target or {}).get("properties") or {}).items():
        out += _leaf_paths(sub, f"{path}[].{name}" if schema.get("type") == "array" else f"{path}.{name}")
    return out


def test_field_reference_follows_the_crd_when_it_changes(tmp_path):
    crd = yaml.safe_load(CRD.read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for top in ("resource", "inference", "tuning"):
        for path in _leaf_paths(schema["properties"][top], top):
            assert f"| `{path}` |" in readme(), f"{path} missing from the field reference"
    # A new field in the CRD shows up (with its constraints) on the next generation.
    schema["properties"]["resource"]["properties"]["spotMaxPrice"] = {
        "type": "string",
        "maxLength": 12,
        "description": "An invented field.",
    }
    changed = tmp_path / "crd.yaml"
    changed.write_text(yaml.safe_dump(crd))
    text = docs.render_readme(readme(), changed)
    assert "| `resource.spotMaxPrice` | string |  | at most 12 chars | An invented field. |" in text


def test_immutable_fields_are_marked_from_the_cel_rules():
    rows = {line.split("|")[1].strip(" `"): line for line in readme().splitlines() if line.startswith("| `")}
    for path in (
        "resource.instanceType",
        "resource.count",
        "resource.labelSelector",
        "inference.preset.name",
        "tuning.preset.name",
        "tuning.method",
    ):
        assert "immutable" in rows[path], path
    assert "immutable" not in rows["inference.adapters"]


def test_preset_and_sku_tables_list_every_catalogue_entry_with_its_runtime():
    text = readme()
    for name, preset in catalog.presets().items():
        assert re.search(rf"^\| `{re.escape(name)}` \| {re.escape(preset.hf_repo)} \|", text, re.M), name
    for name, sku in catalog.skus().items():
        row = next(line for line in text.splitlines() if line.startswith(f"| `{name}` |"))
        runtime = row.rstrip(" |").rsplit("|", 1)[1].strip()
        expected = "sglang" if sku.runs_sglang else ("transformers" if sku.nvidia else "not supported (not NVIDIA)")
        assert runtime == expected, name


def _printer_columns(wide: bool) -> list[str]:
    crd = yaml.safe_load(CRD.read_text())
    cols = crd["spec"]["versions"][0]["additionalPrinterColumns"]
    return ["NAME"] + [c["name"].upper() for c in cols if wide or not c.get("priority")]


def test_kubectl_get_workspace_samples_have_the_crds_columns():
    blocks = re.findall(r"```\n(NAME .*?)\n```", readme(), re.S)
    assert len(blocks) == 3
    for block in blocks:
        header, *rows = block.splitlines()
        wide = "JOBSTARTED" in header
        assert header.split() == _printer_columns(wide)
        assert rows
        # Column values start under their headers, as kubectl prints them.
        starts = [m.start() for m in re.finditer(r"\S+", header)]
        for row in rows:
            tokens = list(re.finditer(r"\S+", row))
            assert all(t.start() in starts for t in tokens), f"misaligned: {row!r}"
            names = [t.group() for t in tokens]
            assert names[1].startswith("Standard_")
            assert all(v in ("True", "False") for v in names[2:-1])


def test_curl_examples_use_the_examples_names():
    text = readme()
    adapters = yaml.safe_load((REPO / "examples" / "inference-phi-3-with-adapters.yaml").read_text())
    preset = adapters["inference"]["preset"]["name"]
    names = [a["source"]["name"] for a in adapters["inference"]["adapters"]]
    for model in re.findall(r'"model":"([^"]+)"', text):
        base, _, adapter = model.partition(":")
        assert base in catalog.presets(), model
        if adapter:
            assert base == preset and adapter in names, model
    for ws in re.findall(r"kubectl get svc (\S+)", text):
        assert any(
            yaml.safe_load(p.read_text())["metadata"]["name"] == ws for p in (REPO / "examples").glob("*.yaml")
        ), ws


def test_the_commands_and_paths_the_readme_names_exist():
    text = readme()
    makefile = (REPO / "Makefile").read_text()
    for target in re.findall(r"^make (\w+)", text, re.M) + re.findall(r"`make (\w+)", text):
        assert re.search(rf"^{target}:", makefile, re.M), f"make {target}"
    assert "make run" in text and "make test" in text
    for path in re.findall(r"kubectl apply -[kf] ([^\s`]+)", text):
        # "-": manifests piped in (python -m hooks certs); a URL: kustomize's remote target (a release tag)
        assert path == "-" or path.strip('"').startswith("https://") or (REPO / path).exists(), path
    for path in ("metacontroller/aks.env", "hooks/Dockerfile", "inference/Dockerfile", "tuning/Dockerfile"):
        assert path in text and (REPO / path).exists(), path
    assert "?ref=v4.17.2" in (REPO / "metacontroller" / "kustomization.yaml").read_text()


def test_every_setting_the_hook_server_reads_is_documented():
    source = (REPO / "hooks" / "settings.py").read_text()
    names = set(re.findall(r'env\.get\("(KAITO_[A-Z_]+)"', source))
    assert names
    for name in names:
        assert f"`{name}`" in readme(), f"{name} is not in README.md"
