"""Tuning uses its hardware: packing keeps examples apart, one process per GPU (DDP), gradient
checkpointing only where memory needs it. CPU stands in for the GPUs (gloo instead of NCCL)."""

import json
import os
import subprocess

import pytest
from tuning_support import tiny

from tuning import parallel
from tuning.packing import pack, pad_packed
from tuning.render import IGNORE

torch = pytest.importorskip("torch")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIB = 1 << 30


def test_pack_fills_rows_and_restarts_positions():
    rows = [{"input_ids": [1] * n, "labels": [5] * n, "attention_mask": [1] * n} for n in (3, 4, 5, 2)]
    packed = pack(rows, max_length=8)
    assert [len(r["input_ids"]) for r in packed] == [7, 7]
    assert packed[0]["position_ids"] == [0, 1, 2, 0, 1, 2, 3]
    # no example learns to predict the first token of the next one
    assert packed[0]["labels"] == [IGNORE, 5, 5, IGNORE, 5, 5, 5]
    padded = pad_packed(packed + [{"input_ids": [1], "labels": [IGNORE], "position_ids": [0]}], pad_id=0)
    assert padded["position_ids"][2] == [0, 1, 2, 3, 4, 5, 6] and padded["labels"][2] == [IGNORE] * 7
    assert sum(p.count(0) for p in padded["position_ids"]) == 5  # one position 0 per real example


@pytest.mark.integration
@pytest.mark.parametrize("family", ["llama", "phi3"])
def test_packed_loss_equals_the_padded_batch_loss(tmp_path, family):
    """If packed examples could attend to each other, the losses would differ."""
    from transformers import AutoModelForCausalLM

    from tuning.render import pad_batch

    model, tok = tiny.make_model(str(tmp_path), family)
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path), dtype=torch.float32, attn_implementation="sdpa")
    model.config.use_cache = False
    model.eval()
    assert parallel.packing_supported(model.config.model_type)
    rows = []
    for s in tiny.SENTENCES[:4]:
        ids = tok(s)["input_ids"]
        rows.append({"input_ids": ids, "labels": [IGNORE] + ids[1:], "attention_mask": [1] * len(ids)})
    padded = {k: torch.tensor(v) for k, v in pad_batch(rows, tok.pad_token_id).items()}
    [row] = pack(rows, max_length=256)
    packed = {k: torch.tensor([v]) for k, v in row.items()}
    with torch.no_grad():
        separate = model(**padded).loss
        together = model(**packed).loss
    assert torch.allclose(separate, together, atol=1e-5), (separate, together)
    with torch.no_grad():  # the check has teeth: without positions the examples see each other
        leaky = model(input_ids=packed["input_ids"], labels=packed["labels"]).loss
    assert not torch.allclose(separate, leaky, atol=1e-4)


def test_packing_choice_follows_the_family_and_the_config():
    from tuning.config import ConfigError
    from tuning.run_plan import packing_choice

    assert packing_choice({}, "llama") and not packing_choice({}, "falcon")
    assert not packing_choice({"packing": False}, "llama")
    with pytest.raises(ConfigError, match=r"DatasetConfig\.packing"):
        packing_choice({"packing": True}, "falcon")


LLAMA_8B = parallel.ModelShape(parameters=8_000_000_000, hidden_size=4096, num_layers=32, vocab_size=128_256)
LLAMA_70B = parallel.ModelShape(parameters=70_000_000_000, hidden_size=8192, num_layers=80, vocab_size=128_256)


def test_checkpointing_only_where_memory_needs_it():
    # QLoRA 8B, 1024 tokens, batch 1 on an 80 GiB A100: activations fit, no recomputation
    assert not parallel.needs_checkpointing(LLAMA_8B, "4bit", 2, 1024, 1, 80 * GIB)
    # the same on a 16 GiB V100 with batch 8: recompute
    assert parallel.needs_checkpointing(LLAMA_8B, "4bit", 2, 1024, 8, 16 * GIB)
    # LoRA (16-bit weights) 70B never fits one 80 GiB GPU
    assert parallel.needs_checkpointing(LLAMA_70B, None, 2, 1024, 1, 80 * GIB)


def test_one_process_per_gpu_only_when_a_copy_fits_one_gpu():
    assert parallel.data_parallel_processes(4, True, "auto") == 4
    assert parallel.data_parallel_processes(4, False, "auto") == 1  # model sharded over the GPUs instead
    assert parallel.data_parallel_processes(4, True, {"": 0}) == 1  # the user placed the model
    assert parallel.data_parallel_processes(1, True, "auto") == 1


@pytest.mark.integration
def test_plan_processes_from_the_model_on_disk(tmp_path):
    from tuning.config import load_training_config
    from tuning.run_plan import plan_processes

    tiny.make_model(str(tmp_path), "llama")
    config = load_training_config(tiny.training_yaml("qlora"))
    assert plan_processes(config, str(tmp_path), gpu_count=2, gpu_bytes=80 * GIB) == 2
    assert plan_processes(config, str(tmp_path), gpu_count=2, gpu_bytes=GIB) == 1  # 2 GiB overhead alone
    assert plan_processes(config, str(tmp_path), gpu_count=0, gpu_bytes=0) == 1


def run_trainer(tmp_path, processes: int, name: str) -> dict:
    model = tmp_path / "model"
    if not model.exists():
        tiny.make_model(str(model), "llama")
        tiny.write_parquet(str(tmp_path / "data" / "train.parquet"), tiny.chat_rows(16))
    (tmp_path / "cfg.yaml").write_text(
        tiny.training_yaml(
            "lora",
            TrainingArguments={"max_steps": 2, "per_device_train_batch_size": 2},
            DatasetConfig={"packing": False},
        )
    )
    out = tmp_path / name
    res = subprocess.run(
        tiny.train_argv(tmp_path / "cfg.yaml", model, tmp_path / "data", out, "--processes", str(processes)),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO},
        check=False,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return json.loads((out / "fine_tuning_completed.txt").read_text())


@pytest.mark.integration
def test_two_process_ddp_on_gloo_trains_twice_the_examples_per_step(tmp_path):
    one = run_trainer(tmp_path, 1, "one")
    two = run_trainer(tmp_path, 2, "two")
    assert one["processes"] == 1 and two["processes"] == 2
    assert one["examples_per_step"] == 2 and two["examples_per_step"] == 4
    assert sorted(os.listdir(tmp_path / "two")) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "fine_tuning_completed.txt",
    ]  # written once, by rank 0
