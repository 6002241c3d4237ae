"""Tiny random models, a locally trained tokenizer and small datasets for the tuning tests (no downloads)."""

from __future__ import annotations

import json
import os
import sys

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France? The capital of France is Paris.",
    "Kubernetes schedules pods onto nodes with GPUs.",
    "Fine tuning with low rank adapters trains a small number of parameters.",
    "Say hello to the operator. Hello operator!",
    "One two three four five six seven eight nine ten.",
]
SPECIAL = ["<unk>", "<pad>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def make_tokenizer(directory: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        SENTENCES * 3, trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIAL, show_progress=False)
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(directory)
    return fast


def tiny_config(family: str, tokenizer, **overrides):
    """The transformers config of a random 2-layer `family` ("llama" or "phi3") model sized for CPU tests:
    hidden 64, 4 heads, the tokenizer's vocabulary and special tokens; `overrides` change single fields."""
    from transformers import LlamaConfig, Phi3Config

    if family not in ("llama", "phi3"):
        raise ValueError(family)
    fields = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    fields.update(overrides)
    return LlamaConfig(**fields) if family == "llama" else Phi3Config(**fields)


def tiny_model_class(family: str):
    from transformers import LlamaForCausalLM, Phi3ForCausalLM

    return LlamaForCausalLM if family == "llama" else Phi3ForCausalLM


def make_model(directory: str, family: str = "llama"):
    """Save a random 2-layer model of `family` ("llama" or "phi3") plus the tokenizer into `directory`."""
    import torch

    tokenizer = make_tokenizer(directory)
    config = tiny_config(family, tokenizer)
    torch.manual_seed(0)
    model = tiny_model_class(family)(config)
    model.save_pretrained(directory)
    return model, tokenizer


def chat_rows(n: int = 8) -> list[dict]:
    rows = []
    for i in range(n):
        s = SENTENCES[i % len(SENTENCES)]
        rows.append(
            {
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": f"Repeat: {s}"},
                    {"role": "assistant", "content": s},
                ]
            }
        )
    return rows


def write_parquet(path: str, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def write_jsonl(path: str, rows: list[dict]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def training_yaml(method: str, **overrides) -> str:
    """A small training_config.yaml: few steps, high learning rate so the adapter moves."""
    import yaml

    quant = (
        {
            "load_in_4bit": True,
            "bnb_4bit_quant_type": "nf4",
            "bnb_4bit_compute_dtype": "bfloat16",
            "bnb_4bit_use_double_quant": True,
        }
        if method == "qlora"
        else {"load_in_4bit": False}
    )
    cfg = {
        "ModelConfig": {"torch_dtype": "bfloat16", "local_files_only": True, "device_map": "auto"},
        "QuantizationConfig": quant,
        "LoraConfig": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0},
        "TrainingArguments": {
            "output_dir": "/mnt/results",
            "max_steps": 3,
            "per_device_train_batch_size": 4,
            "learning_rate": 0.01,
            "logging_steps": 1,
            "save_strategy": "no",
        },
        "DataCollator": {"mlm": True},
        "DatasetConfig": {"shuffle_dataset": True, "train_test_split": 1, "max_seq_length": 64},
    }
    for section, values in overrides.items():
        cfg[section].update(values)
    return yaml.safe_dump({"training_config": cfg})


def train_argv(config, model, data, output, *flags: str) -> list[str]:
    """`python -m tuning.train` on `config` (a training YAML), the base `model`, the `data` folder and the
    adapter `output` folder, with any further flags (e.g. --processes)."""
    return [sys.executable, "-m", "tuning.train", "--config", str(config), "--model", str(model), "--data", str(data),
            "--output", str(output), *flags]  # fmt: skip
