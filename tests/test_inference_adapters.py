"""Adapter preparation for real on CPU: a tiny random Llama + a PEFT LoRA adapter saved to disk,
then our strength scaling compared against PEFT's own scaling of the same adapter."""

import hashlib
import json
import os
from pathlib import Path

import pytest

from inference.adapters import (
    AdapterError,
    adapter_info_from_config,
    prepare_adapters,
    read_adapter_info,
    union_target_modules,
)
from inference.launch_args import AdapterSpec

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")


# Smaller than tuning_support.tiny's models on purpose: adapter arithmetic needs no tokenizer, 32 wide is enough.
def tiny_llama(seed=0):
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    return transformers.LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def saved_adapter(tmp_path_factory):
    root = tmp_path_factory.mktemp("mnt-adapter")
    model = peft.get_peft_model(
        tiny_llama(),
        peft.LoraConfig(
            r=4,
            lora_alpha=8,
            target_modules=["q_proj", "v_proj", "down_proj"],
            init_lora_weights=False,
            lora_dropout=0.0,
        ),
    )
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
    b = adapter_info_from_config("b", {"r": 4, "target_modules": ["k_proj", "v_proj"]})
    assert (a.rank, b.rank) == (8, 4)
    assert union_target_modules([a, b]) == ["k_proj", "q_proj", "v_proj"]
    phi = adapter_info_from_config(
        "phi", {"r": 8, "target_modules": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]}
    )
    assert union_target_modules([phi]) == ["down_proj", "gate_up_proj", "o_proj", "qkv_proj"]
    falcon = adapter_info_from_config("f", {"r": 8, "target_modules": ["query_key_value"]})
    assert union_target_modules([a, falcon]) == ["all"]


def test_adapters_sglang_would_misserve_are_refused_by_field():
    """SGLang applies a regex's literal text as module names and ignores per-module patterns, silently."""
    with pytest.raises(AdapterError, match=r"adapter 'rx'.*target_modules is the pattern '.\*q_proj'.*list of module"):
        adapter_info_from_config("rx", {"r": 8, "target_modules": ".*q_proj"})
    for key, value in (("rank_pattern", {"k_proj": 32}), ("alpha_pattern", {"k_proj": 4})):
        with pytest.raises(AdapterError, match=rf"adapter 'p'.*sets {key}.*train without {key}"):
            adapter_info_from_config("p", {"r": 8, "target_modules": ["k_proj"], key: value})
    # empty patterns (what PEFT writes by default) are fine
    assert (
        adapter_info_from_config(
            "ok", {"r": 8, "target_modules": ["q_proj"], "rank_pattern": {}, "alpha_pattern": {}}
        ).rank
        == 8
    )


def test_combined_is_a_reserved_adapter_name(saved_adapter, tmp_path):
    with pytest.raises(AdapterError, match="'combined' is reserved"):
        prepare_adapters([AdapterSpec("fin"), AdapterSpec("combined")], str(saved_adapter), str(tmp_path))


def _save(root: Path, name: str, seed: int, **lora):
    torch.manual_seed(seed)
    model = peft.get_peft_model(tiny_llama(), peft.LoraConfig(init_lora_weights=False, lora_dropout=0.0, **lora))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.3)
    model.save_pretrained(root / name)


def _peft_logits(root: Path, mix: list[tuple[str, float]]):
    """PEFT's own answer: the adapters active together, each at its strength (LoraLayer.set_scale)."""
    model = peft.PeftModel.from_pretrained(tiny_llama(), str(root / mix[0][0]), adapter_name=mix[0][0])
    for name, _ in mix[1:]:
        model.load_adapter(str(root / name), adapter_name=name)
    model.base_model.set_adapter([name for name, _ in mix])
    for module in model.modules():
        if isinstance(module, peft.tuners.lora.LoraLayer):
            for name, strength in mix:
                if name in module.scaling:
                    module.set_scale(name, strength)
    return logits(model.eval(), IDS)


def _served_logits(path: str):
    """What SGLang computes: alpha/r scaling, use_rslora ignored (it reads only r and lora_alpha)."""
    cfg = json.loads((Path(path) / "adapter_config.json").read_text())
    assert not cfg.get("use_rslora"), "a served copy must not rely on use_rslora (SGLang ignores it)"
    return logits(peft.PeftModel.from_pretrained(tiny_llama(), path).eval(), IDS)


def test_rslora_factor_is_folded_into_lora_b(tmp_path):
    _save(tmp_path / "mnt", "rs", 3, r=16, lora_alpha=8, use_rslora=True, target_modules=["q_proj", "down_proj"])
    for strength in (1.0, 0.5):
        [prep] = prepare_adapters([AdapterSpec("rs", strength)], str(tmp_path / "mnt"), str(tmp_path / f"w{strength}"))
        assert prep.b_factor == pytest.approx(strength * 4.0)
        assert torch.allclose(_served_logits(prep.path), _peft_logits(tmp_path / "mnt", [("rs", strength)]), atol=1e-5)
    # without the fold the answer is sqrt(r) = 4x too weak: the check above can fail
    plain = json.loads((tmp_path / "mnt" / "rs" / "adapter_config.json").read_text())
    alt = tmp_path / "unfolded"
    alt.mkdir()
    (alt / "adapter_config.json").write_text(json.dumps({**plain, "use_rslora": False}))
    (alt / "adapter_model.safetensors").write_bytes(
        (tmp_path / "mnt" / "rs" / "adapter_model.safetensors").read_bytes()
    )
    assert not torch.allclose(_served_logits(str(alt)), _peft_logits(tmp_path / "mnt", [("rs", 1.0)]), atol=1e-3)


def test_combined_adapter_is_the_exact_strength_weighted_sum(tmp_path):
    mnt = tmp_path / "mnt"
    _save(mnt, "a", 1, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])
    _save(mnt, "b", 2, r=8, lora_alpha=8, target_modules=["q_proj", "o_proj"])
    _save(mnt, "c", 3, r=4, lora_alpha=16, use_rslora=True, target_modules=["k_proj", "up_proj"])
    specs = [AdapterSpec("a", 1.0), AdapterSpec("b", 0.5), AdapterSpec("c", 0.25)]
    prepared = prepare_adapters(specs, str(mnt), str(tmp_path / "work"))
    combined = prepared[-1]
    assert (combined.name, combined.rank) == ("combined", 16)
    assert combined.target_modules == ("down_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj")
    want = _peft_logits(mnt, [(s.name, s.strength) for s in specs])
    assert torch.allclose(_served_logits(combined.path), want, atol=1e-5), (
        (_served_logits(combined.path) - want).abs().max()
    )
    # and it differs from each single adapter
    for s in specs:
        assert (want - _peft_logits(mnt, [(s.name, s.strength)])).abs().max() > 1e-3


def test_one_adapter_needs_no_combination(saved_adapter, tmp_path):
    prepared = prepare_adapters([AdapterSpec("fin", 0.5)], str(saved_adapter), str(tmp_path))
    assert [p.name for p in prepared] == ["fin"]


def test_our_module_list_matches_installed_sglang():
    common = pytest.importorskip("sglang.srt.utils.common", reason="sglang is not installed in this venv")
    from inference.adapters import SGLANG_TARGET_MODULES

    assert set(common.SUPPORTED_LORA_TARGET_MODULES) >= SGLANG_TARGET_MODULES


def test_vision_encoder_weights_are_refused_for_sglang(saved_adapter, tmp_path):
    """Gemma 3 style: peft matched q_proj in the vision tower too; SGLang would put it in language layer 0."""
    from safetensors.torch import load_file, save_file

    from inference.adapters import check_sglang_servable

    src = tmp_path / "mnt" / "mm"
    src.mkdir(parents=True)
    (src / "adapter_config.json").write_bytes((saved_adapter / "fin" / "adapter_config.json").read_bytes())
    tensors = load_file(saved_adapter / "fin" / "adapter_model.safetensors")
    language_only = dict(tensors)
    tensors["base_model.model.vision_tower.vision_model.encoder.layers.0.self_attn.q_proj.lora_A.weight"] = torch.zeros(
        4, 16
    )
    save_file(tensors, src / "adapter_model.safetensors")
    prepared = prepare_adapters([AdapterSpec("mm")], str(tmp_path / "mnt"), str(tmp_path / "work"))
    with pytest.raises(AdapterError, match=r"adapter 'mm': holds LoRA weights for the vision encoder.*transformers"):
        check_sglang_servable(prepared)
    save_file(language_only, src / "adapter_model.safetensors")
    check_sglang_servable(prepared)


@pytest.mark.parametrize("target", ["/dev/zero", "elsewhere.json"])
def test_an_adapter_config_that_is_a_symlink_is_refused_without_reading_it(tmp_path, target):
    adapter = tmp_path / "a"
    adapter.mkdir()
    (tmp_path / "elsewhere.json").write_text(json.dumps({"r": 4, "target_modules": ["q_proj"]}))
    (adapter / "adapter_config.json").symlink_to(target)
    with pytest.raises(AdapterError, match=r"adapter 'a': adapter_config\.json is a symbolic link"):
        read_adapter_info("a", str(adapter))


def test_an_oversized_adapter_config_is_refused(tmp_path):
    adapter = tmp_path / "a"
    adapter.mkdir()
    with open(adapter / "adapter_config.json", "wb") as f:
        f.truncate(2 << 20)  # sparse: 2 MiB of nothing, over the 1 MiB a config may have
    with pytest.raises(AdapterError, match="more than the 1048576 allowed"):
        read_adapter_info("a", str(adapter))
