"""Kaito's default training_config.yaml templates (lora-params-template / qlora-params-template).

The hook writes the method's template into the tuning Job's ConfigMap when the Workspace names no config
of its own; the trainer lays a user's config over the same template. Kept as Python strings, not package
data, so they ship with any install of the package.
"""

METHODS = ("lora", "qlora")

LORA = """\
training_config:
  ModelConfig:
    torch_dtype: "bfloat16"
    local_files_only: true
    device_map: "auto"
    # chat_template: "/workspace/chat_templates/llama-3-instruct.jinja"

  QuantizationConfig:
    load_in_4bit: false

  LoraConfig:
    r: 8
    lora_alpha: 8
    lora_dropout: 0.0
    # target_modules: default per model family (e.g. Phi-3: qkv_proj, o_proj, gate_up_proj, down_proj)

  TrainingArguments:
    output_dir: "/mnt/results"
    ddp_find_unused_parameters: false
    save_strategy: "no"
    per_device_train_batch_size: 1

  DataCollator:
    mlm: true

  DatasetConfig:
    shuffle_dataset: true
    train_test_split: 1
"""

# The QLoRA template differs only in its QuantizationConfig: the base model loads as 4-bit NF4.
QLORA = LORA.replace(
    "    load_in_4bit: false\n",
    "    load_in_4bit: true\n"
    '    bnb_4bit_quant_type: "nf4"\n'
    '    bnb_4bit_compute_dtype: "bfloat16"\n'
    "    bnb_4bit_use_double_quant: true\n",
)


def default_training_config(method: str) -> str:
    """YAML text of Kaito's template for "lora" or "qlora" (case-insensitive)."""
    m = str(method).strip().lower()
    if m == "lora":
        return LORA
    if m == "qlora":
        return QLORA
    raise ValueError(f"unknown tuning method {method!r}; expected one of: {', '.join(METHODS)}")
