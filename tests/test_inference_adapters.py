"""Adapter preparation for real on CPU: a tiny random Llama + a PEFT LoRA adapter saved to disk,
then our strength scaling compared against PEFT's own scaling of the same adapter."""

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from inference.adapters import (  # noqa: E402
    AdapterError,
    AdapterInfo,
    adapter_info_from_config,
    prepare_adapters,
    read_adapter_info,
    union_target_modules,
)
from inference.launch_args import AdapterSpec  # noqa: E402

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")


def tiny_llama(seed=0):
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
                                   bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return transformers.LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def saved_adapter(tmp_path_factory):
    root = tmp_path_factory.mktemp("mnt-adapter")
    model = peft.get_peft_model(tiny_llama(), peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False,
        lora_dropout=0.0))
    model.save_pretrained(root / "fin")
    (root / "fin" / "extra.txt").write_text("kept")
    return root


def digest(d: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


IDS = torch.tensor([[1, 5, 9, 17, 33, 64, 3]])


def test_strength_scaling_equals_peft_scaling(saved_adapter, tmp_path):
    before = digest(saved_adapter / "fin")
    [prep] = prepare_adapters([AdapterSpec("fin", 0.35)], str(saved_adapter), str(tmp_path / "work"))
    assert prep.path == str(tmp_path / "work" / "fin")
    assert digest(saved_adapter / "fin") == before  # the mounted adapter is never modified
    assert sorted(os.listdir(prep.path)) == sorted(os.listdir(saved_adapter / "fin"))
    assert (Path(prep.path) / "extra.txt").read_text() == "kept"
    assert json.loads((Path(prep.path) / "adapter_config.json").read_text())["lora_alpha"] == 8

    ours = logits(peft.PeftModel.from_pretrained(tiny_llama(), prep.path).eval(), IDS)

    # PEFT's own runtime scaling of the unscaled adapter.
    ref = peft.PeftModel.from_pretrained(tiny_llama(), str(saved_adapter / "fin")).eval()
    full = logits(ref, IDS)
    n = 0
    for module in ref.modules():
        if isinstance(module, peft.tuners.lora.LoraLayer):
            module.set_scale("default", 0.35)
            n += 1
    assert n == 6
    peft_scaled = logits(ref, IDS)
    base = logits(tiny_llama(), IDS)

    assert torch.allclose(ours, peft_scaled, atol=1e-5), (ours - peft_scaled).abs().max()
    # ...and it is a real, partial effect: neither the base model nor the full-strength adapter.
    assert (ours - base).abs().max() > 1e-3
    assert (ours - full).abs().max() > 1e-3
    # The other equivalent route (rewriting lora_alpha; exact for plain LoRA) agrees too.
    cfg = json.loads((saved_adapter / "fin" / "adapter_config.json").read_text())
    alt = tmp_path / "alpha"
    alt.mkdir()
    (alt / "adapter_config.json").write_text(json.dumps({**cfg, "lora_alpha": cfg["lora_alpha"] * 0.35}))
    (alt / "adapter_model.safetensors").write_bytes((saved_adapter / "fin" / "adapter_model.safetensors").read_bytes())
    alpha = logits(peft.PeftModel.from_pretrained(tiny_llama(), str(alt)).eval(), IDS)
    assert torch.allclose(ours, alpha, atol=1e-5)


def test_strength_zero_is_base_and_one_uses_mount(saved_adapter, tmp_path):
    [zero] = prepare_adapters([AdapterSpec("fin", 0.0)], str(saved_adapter), str(tmp_path / "w"))
    [one] = prepare_adapters([AdapterSpec("fin", 1.0)], str(saved_adapter), str(tmp_path / "w1"))
    assert one.path == str(saved_adapter / "fin") and not (tmp_path / "w1").exists()
    out = logits(peft.PeftModel.from_pretrained(tiny_llama(), zero.path).eval(), IDS)
    assert torch.allclose(out, logits(tiny_llama(), IDS), atol=1e-6)
    assert (zero.rank, zero.target_modules) == (4, ("down_proj", "q_proj", "v_proj"))


def test_bin_adapter_is_scaled_into_safetensors(saved_adapter, tmp_path):
    src = tmp_path / "mnt" / "old"
    src.mkdir(parents=True)
    (src / "adapter_config.json").write_bytes((saved_adapter / "fin" / "adapter_config.json").read_bytes())
    from safetensors.torch import load_file

    tensors = load_file(saved_adapter / "fin" / "adapter_model.safetensors")
    torch.save(tensors, src / "adapter_model.bin")
    [prep] = prepare_adapters([AdapterSpec("old", 2.0)], str(tmp_path / "mnt"), str(tmp_path / "work"))
    scaled = load_file(Path(prep.path) / "adapter_model.safetensors")
    assert not (Path(prep.path) / "adapter_model.bin").exists()
    for k, t in tensors.items():
        factor = 2.0 if ".lora_B." in k else 1.0
        assert torch.equal(scaled[k], t * factor), k


def test_missing_or_bad_adapter_is_a_clear_error(tmp_path):
    with pytest.raises(AdapterError, match=r"adapter 'gone'.*adapter_config.json not found"):
        read_adapter_info("gone", str(tmp_path / "gone"))
    with pytest.raises(AdapterError, match="DoRA"):
        adapter_info_from_config("d", {"r": 8, "target_modules": ["q_proj"], "use_dora": True})
    with pytest.raises(AdapterError, match="not LORA"):
        adapter_info_from_config("p", {"peft_type": "PREFIX_TUNING"})


def test_target_module_union_and_rank():
    a = adapter_info_from_config("a", {"r": 8, "target_modules": ["q_proj", "v_proj"]})
    b = adapter_info_from_config("b", {"r": 4, "target_modules": ["k_proj", "v_proj"], "rank_pattern": {"k_proj": 32}})
    assert (a.rank, b.rank) == (8, 32)
    assert union_target_modules([a, b]) == ["k_proj", "q_proj", "v_proj"]
    phi = adapter_info_from_config("phi", {"r": 8, "target_modules": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]})
    assert union_target_modules([phi]) == ["down_proj", "gate_up_proj", "o_proj", "qkv_proj"]
    assert union_target_modules([AdapterInfo("x", 8, "all-linear")]) == ["all"]
    falcon = adapter_info_from_config("f", {"r": 8, "target_modules": ["query_key_value"]})
    assert union_target_modules([a, falcon]) == ["all"]


def test_our_module_list_matches_installed_sglang():
    common = pytest.importorskip("sglang.srt.utils.common", reason="sglang is not installed in this venv")
    from inference.adapters import SGLANG_TARGET_MODULES

    assert SGLANG_TARGET_MODULES <= set(common.SUPPORTED_LORA_TARGET_MODULES)
