"""Train -> push -> pull: the pushed image's /data is a peft adapter that reproduces the trained one.

This is the path an inference workspace takes with `adapters[].source.image`: the kubelet pulls the image
and an init container copies its /data into /mnt/adapter/<name>.
"""

import json
import os
import tarfile

import pytest
import torch
from tuning_support import registry as reg_support
from tuning_support import tiny

from tuning import training_loop
from tuning.config import load_training_config
from tuning.push import push

pytestmark = [
    pytest.mark.integration,  # trains a tiny model and pushes it to a local OCI registry
    pytest.mark.skipif(
        reg_support.REGISTRY_BIN is None or reg_support.SKOPEO_BIN is None,
        reason="docker-registry or skopeo absent (apt-get install docker-registry skopeo)",
    ),
]


def _logits(model_dir, adapter_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), adapter_dir)
    with torch.no_grad():
        return model(input_ids=torch.tensor([[2, 10, 20, 30, 40]])).logits


def test_trained_adapter_round_trips_through_the_registry(tmp_path):
    model_dir, data_dir, results = tmp_path / "model", tmp_path / "data", tmp_path / "results"
    tiny.make_model(str(model_dir), "phi3")
    tiny.write_parquet(str(data_dir / "train.parquet"), tiny.chat_rows(8))
    config = load_training_config(tiny.training_yaml("qlora"))
    training_loop.train(config, str(model_dir), str(data_dir), str(results), "microsoft/Phi-3-mini-128k-instruct")

    (tmp_path / "reg").mkdir()
    with reg_support.running_registry(str(tmp_path / "reg")) as reg:
        ref = f"{reg['host']}/adapters/phi-3-dolly:0.0.1"
        push(str(results), ref, plain_http=True, preset="phi-3-mini-128k-instruct")
        pulled = tmp_path / "pulled"
        copy = reg_support.skopeo("copy", "--src-tls-verify=false", f"docker://{ref}", f"dir:{pulled}")
        assert copy.returncode == 0, copy.stderr

    manifest = json.loads((pulled / "manifest.json").read_text())
    rootfs = tmp_path / "rootfs"
    for layer in manifest["layers"]:
        with tarfile.open(pulled / layer["digest"].split(":", 1)[1]) as tar:
            tar.extractall(rootfs, filter="data")
    adapter = tmp_path / "mnt" / "adapter" / "dolly"
    os.makedirs(adapter.parent)
    os.rename(rootfs / "data", adapter)
    assert sorted(os.listdir(adapter)) == ["adapter_config.json", "adapter_model.safetensors"]
    assert (
        json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
        == "microsoft/Phi-3-mini-128k-instruct"
    )
    assert torch.equal(_logits(str(model_dir), str(adapter)), _logits(str(model_dir), str(results)))
