"""Phi-3 with an adapter on its fused modules (qkv_proj, gate_up_proj: what our phi-3 tuning trains),
served by both runtimes through the gateway and compared with the transformers+peft reference."""

from __future__ import annotations

import pytest
import requests
from tiny_models import PHI3_PRESET

MESSAGES = [{"role": "user", "content": "adapters change what the model says"}]
N = 10


def _chat(stack, model):
    r = requests.post(
        f"{stack.url}/v1/chat/completions",
        timeout=300,
        json={"model": model, "messages": MESSAGES, "max_tokens": N, "temperature": 0},
    )
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


def test_fused_module_adapter_equals_peft(phi3_stack, phi3_ref):
    base = phi3_ref.chat(MESSAGES, N)["text"]
    want = phi3_ref.chat(MESSAGES, N, (("fused", 1.0),))["text"]
    assert want != base
    assert _chat(phi3_stack, PHI3_PRESET) == base
    assert _chat(phi3_stack, f"{PHI3_PRESET}:fused") == want


def test_single_adapter_is_the_kaito_chat_default(phi3_stack, phi3_ref):
    want = phi3_ref.chat(MESSAGES, N, (("fused", 1.0),))["text"]
    r = requests.post(
        f"{phi3_stack.url}/chat",
        timeout=300,
        json={"messages": MESSAGES, "generate_kwargs": {"do_sample": False, "max_new_tokens": N}},
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"Result": want}


@pytest.mark.parametrize("path", ["/v1/models", f"/v1/models/{PHI3_PRESET}:fused"])
def test_models_endpoints(phi3_stack, path):
    r = requests.get(phi3_stack.url + path, timeout=60)
    assert r.status_code == 200, r.text
