"""The trainer's output: only adapter_config.json and adapter_model.safetensors, then the completion
marker fine_tuning_completed.txt, written last (the pusher waits for it).
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

MARKER = "fine_tuning_completed.txt"


def write_adapter(adapter_dir: str, output_dir: str, base_model: str | None, summary: dict[str, Any]) -> None:
    """Copy the two adapter files to `output_dir`, then write the completion marker last."""
    os.makedirs(output_dir, exist_ok=True)
    marker = os.path.join(output_dir, MARKER)
    if os.path.exists(marker):
        os.remove(marker)
    with open(os.path.join(adapter_dir, "adapter_config.json"), encoding="utf-8") as f:
        adapter_config = json.load(f)
    adapter_config["base_model_name_or_path"] = base_model
    tmp = os.path.join(output_dir, ".adapter_config.json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(adapter_config, f, indent=2, sort_keys=True)
    os.replace(tmp, os.path.join(output_dir, "adapter_config.json"))
    shutil.copyfile(
        os.path.join(adapter_dir, "adapter_model.safetensors"),
        os.path.join(output_dir, "adapter_model.safetensors"),
    )
    with open(marker, "w", encoding="utf-8") as f:
        f.write(json.dumps(summary, sort_keys=True) + "\n")
