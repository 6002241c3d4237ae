"""Real QLoRA/LoRA training on CPU with tiny random Llama and Phi-3 models and a locally trained tokenizer.

bitsandbytes >= 0.48 runs NF4 4-bit on CPU, so the QLoRA path here is the real one (no GPU mock).
"""

import csv
import json
import logging
import os
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tuning_support import tiny

from tuning import base_model, choices, train, training_loop
from tuning.config import ConfigError, load_training_config

pytestmark = pytest.mark.integration  # trains tiny models

EXPECTED_FILES = ["adapter_config.json", "adapter_model.safetensors", "fine_tuning_completed.txt"]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    out = {}
    for family in ("llama", "phi3"):
        d = tmp_path_factory.mktemp(family)
        tiny.make_model(str(d), family)
        out[family] = str(d)
    return out


@pytest.fixture(scope="module")
def chat_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("chat")
    tiny.write_parquet(str(d / "train.parquet"), tiny.chat_rows(8))
    return str(d)


def _logits(model_dir, adapter_dir=None):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter_dir:
        model = PeftModel.from_pretrained(model, adapter_dir)
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "Repeat: Hello operator!"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        return model(input_ids=ids["input_ids"]).logits


def _run(method, model_dir, data_dir, out_dir, repo=None, **overrides):
    config = load_training_config(tiny.training_yaml(method, **overrides))
    return training_loop.train(config, model_dir, data_dir, str(out_dir), repo)


def _check_adapter(out_dir, model_dir, targets, repo):
    assert sorted(os.listdir(out_dir)) == EXPECTED_FILES
    cfg = json.loads((out_dir / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 4 and cfg["lora_alpha"] == 8
    assert sorted(cfg["target_modules"]) == sorted(targets)
    assert cfg["base_model_name_or_path"] == repo
    tensors = load_file(str(out_dir / "adapter_model.safetensors"))
    # 2 layers x len(targets) modules x (A, B)
    assert len(tensors) == 2 * len(targets) * 2
    assert {k.split(".")[-2] for k in tensors} == {"lora_A", "lora_B"}
    assert any(t.abs().sum() > 0 for k, t in tensors.items() if "lora_B" in k)  # trained away from B = 0
    marker = json.loads((out_dir / "fine_tuning_completed.txt").read_text())
    assert marker["steps"] == 3 and marker["train_loss"] == marker["train_loss"]  # not NaN
    base, tuned = _logits(model_dir), _logits(model_dir, str(out_dir))
    assert base.shape == tuned.shape
    assert (base - tuned).abs().max() > 1e-4


def test_qlora_llama_messages_parquet(models, chat_data, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="tuning.train")
    summary = _run("qlora", models["llama"], chat_data, tmp_path / "out", "meta-llama/Llama-3.1-8B-Instruct")
    assert summary["compute_dtype"] == "float32" and summary["examples"] == 8
    _check_adapter(
        tmp_path / "out", models["llama"], choices.TARGET_MODULES["llama"], "meta-llama/Llama-3.1-8B-Instruct"
    )
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress ")]
    steps = [json.loads(p.split(" ", 1)[1]) for p in progress]
    assert [s["step"] for s in steps if "loss" in s] == [1, 2, 3]
    assert all(s["tokens_per_s"] > 0 and s["steps_per_s"] > 0 for s in steps)


def test_qlora_really_loads_the_base_in_4bit_nf4(models):
    import bitsandbytes as bnb

    config = load_training_config(tiny.training_yaml("qlora"))
    model, _tok, quantized = base_model.load_model_and_tokenizer(models["phi3"], config, "float32", on_gpu=False)
    linear4 = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert quantized and len(linear4) == 2 * 4  # qkv_proj, o_proj, gate_up_proj, down_proj per layer
    assert linear4[0].weight.quant_state.quant_type == "nf4"


def test_qlora_phi3_targets_the_fused_projections(models, chat_data, tmp_path):
    _run("qlora", models["phi3"], chat_data, tmp_path / "out", "microsoft/Phi-3-mini-128k-instruct")
    _check_adapter(
        tmp_path / "out",
        models["phi3"],
        ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
        "microsoft/Phi-3-mini-128k-instruct",
    )


def test_lora_with_prompt_completion_jsonl_text_json_and_csv(models, tmp_path):
    data = tmp_path / "data"
    tiny.write_jsonl(str(data / "pc.jsonl"), [{"prompt": f"Repeat: {s}", "completion": s} for s in tiny.SENTENCES])
    (data / "text.json").write_text(json.dumps([{"text": s} for s in tiny.SENTENCES]))
    with open(data / "more.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["prompt", "completion"])
        w.writeheader()
        w.writerow({"prompt": "Say hello", "completion": "Hello operator!"})
    summary = _run(
        "lora", models["llama"], str(data), tmp_path / "out", LoraConfig={"target_modules": ["q_proj", "v_proj"]}
    )
    assert summary["examples"] == len(tiny.SENTENCES) * 2 + 1
    _check_adapter(tmp_path / "out", models["llama"], ["q_proj", "v_proj"], None)


def test_cli_end_to_end_and_output_holds_only_the_adapter(models, chat_data, tmp_path):
    (tmp_path / "cfg.yaml").write_text(tiny.training_yaml("qlora"))
    res = subprocess.run(
        tiny.train_argv(tmp_path / "cfg.yaml", models["llama"], chat_data, tmp_path / "out"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert sorted(os.listdir(tmp_path / "out")) == EXPECTED_FILES
    assert "progress {" in res.stdout and "compute dtype=float32" in res.stdout


def test_cli_reports_config_and_data_errors_with_exit_2(models, tmp_path):
    (tmp_path / "bad.yaml").write_text("training_config:\n  Optimizer: {}\n")
    (tmp_path / "ok.yaml").write_text(tiny.training_yaml("lora"))
    (tmp_path / "empty").mkdir()
    for cfg, data in (("bad.yaml", str(tmp_path)), ("ok.yaml", str(tmp_path / "empty"))):
        code = train.main(
            [
                "--config",
                str(tmp_path / cfg),
                "--model",
                models["llama"],
                "--data",
                data,
                "--output",
                str(tmp_path / "out"),
            ]
        )
        assert code == 2
    assert not (tmp_path / "out").exists()


def test_unknown_training_argument_is_a_config_error(models, chat_data, tmp_path):
    with pytest.raises(ConfigError, match="TrainingArguments"):
        _run("lora", models["llama"], chat_data, tmp_path / "out", TrainingArguments={"not_an_argument": 1})


def test_base_model_comes_from_the_weights_cache(models, tmp_path, monkeypatch):
    """The Hub is the boundary: a loopback stand-in serves the tiny model over its HTTP API."""
    import huggingface_hub.constants as hub_constants
    from weights_support.loopback_hub import LoopbackHub

    with pytest.raises(base_model.TrainError, match="no --model-repo"):
        base_model.ensure_model(str(tmp_path / "empty"), None)
    files = {p.name: p.read_bytes() for p in Path(models["llama"]).iterdir()}
    with LoopbackHub({"org/model": files}) as hub:
        monkeypatch.setattr(hub_constants, "ENDPOINT", hub.url)
        path, entry = base_model.ensure_model(str(tmp_path / "w"), "org/model", cache_dir=str(tmp_path / "cache"))
        entry.release()
        assert not entry.stats.cached and os.path.isfile(os.path.join(path, "config.json"))
        assert path.startswith(str(tmp_path / "cache"))
        hub.reset_counters()
        again, entry = base_model.ensure_model(str(tmp_path / "w"), "org/model", cache_dir=str(tmp_path / "cache"))
        entry.release()
        assert again == path and entry.stats.cached and hub.body_bytes == 0  # a second run downloads nothing
        with pytest.raises(base_model.TrainError, match="cannot get the base model org/gated"):
            base_model.ensure_model(str(tmp_path / "g"), "org/gated")


@pytest.mark.parametrize(
    "requested, capability, expected",
    [
        ("bfloat16", None, "float32"),
        ("bfloat16", (7, 0), "float16"),
        ("bfloat16", (8, 0), "bfloat16"),
        ("bfloat16", (9, 0), "bfloat16"),
        ("float16", (8, 6), "float16"),
        (None, (7, 5), "float16"),
        ("auto", (8, 0), "bfloat16"),
        ("float32", (8, 0), "float32"),
    ],
)
def test_compute_dtype_follows_the_hardware(requested, capability, expected):
    assert choices.compute_dtype(requested, capability) == expected


def test_target_modules_per_family():
    assert choices.default_target_modules("phi3") == ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]
    assert choices.default_target_modules("llama") == [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ]
    assert choices.default_target_modules("falcon") == ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"]
    assert choices.default_target_modules("somethingnew") == "all-linear"


def test_target_modules_precedence():
    assert choices.target_modules({"target_modules": ["q_proj"]}, "phi3", "k_proj,v_proj") == ["q_proj"]
    assert choices.target_modules({}, "phi3", " k_proj, v_proj ,") == ["k_proj", "v_proj"]
    assert choices.target_modules({"target_modules": None}, "phi3", "") == [
        "qkv_proj",
        "o_proj",
        "gate_up_proj",
        "down_proj",
    ]
