"""Presets whose LoRA adapters SGLang 0.5.23 cannot apply are refused at validation with adapters on the
SGLang runtime (field inference.adapters, the reason and the fix), and served by the transformers runtime
when the Workspace asks for it. Presets SGLang serves with adapters (Llama, Phi-3: tests/real_sglang runs
them on the real server) are not refused."""

from __future__ import annotations

import pytest
from workspace_support import NOW, condition, request, workspace

from hooks.settings import Settings
from hooks.workspace import catalog
from hooks.workspace.sync import sync

ADAPTERS = [{"source": {"name": "a", "image": "r.io/a:1"}}]
SKU = {"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": {"matchLabels": {"apps": "x"}}}


def _sync(ws):
    return sync(request(ws), Settings(), NOW)


def _runtime(resp) -> str:
    kinds = [c for c in resp["children"] if c["kind"] in ("Deployment", "StatefulSet")]
    args = kinds[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    return args[args.index("--runtime") + 1]


@pytest.mark.parametrize(
    "preset,why",
    [
        ("phi-2", "only to qkv_proj on Phi-2"),
        ("gemma-3-4b-instruct", "vision tower"),
        ("falcon-7b", "transformers backend"),
    ],
)
def test_adapters_sglang_cannot_apply_are_refused_by_field_with_the_fix(preset, why):
    inference = {"preset": {"name": preset, "presetOptions": {"modelAccessSecret": "hf"}}, "adapters": ADAPTERS}
    resp = _sync(workspace(resource=SKU, inference=inference))
    assert resp["children"] == []
    message = condition(resp, "ResourceReady")["message"]
    assert "inference.adapters" in message and why in message
    assert "kaito.sh/runtime: transformers" in message
    ws = workspace(resource=SKU, inference=inference)
    ws["metadata"]["annotations"] = {"kaito.sh/runtime": "transformers"}
    assert _runtime(_sync(ws)) == "transformers"


@pytest.mark.parametrize("preset", ["phi-3-mini-4k-instruct", "llama-3.1-8b-instruct"])
def test_presets_sglang_serves_with_adapters_are_not_refused(preset):
    inference = {"preset": {"name": preset, "presetOptions": {"modelAccessSecret": "hf"}}, "adapters": ADAPTERS}
    assert _runtime(_sync(workspace(resource=SKU, inference=inference))) == "sglang"


def test_phi2_adapters_from_our_tuning_target_modules_sglang_cannot():
    """The reason holds for what we produce: our phi-2 tuning targets modules outside SGLang's LoRA set."""
    from inference.adapters import SGLANG_TARGET_MODULES

    phi2 = catalog.presets()["phi-2"]
    assert not set(phi2.lora_target_modules) <= SGLANG_TARGET_MODULES
    assert not phi2.sglang_lora
    for name in ("phi-3-mini-4k-instruct", "llama-3.1-8b-instruct"):
        p = catalog.presets()[name]
        assert p.sglang_lora and set(p.lora_target_modules) <= SGLANG_TARGET_MODULES


def test_combined_is_a_reserved_adapter_name_with_several_adapters():
    two = [{"source": {"name": "combined", "image": "r.io/a:1"}}, {"source": {"name": "b", "image": "r.io/b:1"}}]
    resp = _sync(workspace(inference={"preset": {"name": "phi-3-mini-4k-instruct"}, "adapters": two}))
    message = condition(resp, "ResourceReady")["message"]
    assert "inference.adapters[0].source.name" in message and "reserved" in message
    one = [{"source": {"name": "combined", "image": "r.io/a:1"}}]
    assert _runtime(_sync(workspace(inference={"preset": {"name": "phi-3-mini-4k-instruct"}, "adapters": one})))
