"""Training config templates and validation, and the static URL policy the workspace hook and the downloader share."""

import subprocess
import sys

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from tuning.config import (
    SECTIONS,
    ConfigError,
    config_problems,
    load_training_config,
    output_dir_problem,
    training_config_problems,
)
from workload_contract.training_templates import default_training_config
from workload_contract.url_policy import INTERNAL_RANGES, url_problem


@pytest.mark.parametrize("method", ["lora", "qlora", "QLoRA", "LORA"])
def test_templates_have_the_six_sections_and_validate(method):
    text = default_training_config(method)
    doc = yaml.safe_load(text)
    assert list(doc) == ["training_config"]
    assert set(doc["training_config"]) == set(SECTIONS)
    assert training_config_problems(text, method) == []


def test_template_values_follow_kaito():
    lora = yaml.safe_load(default_training_config("lora"))["training_config"]
    qlora = yaml.safe_load(default_training_config("qlora"))["training_config"]
    assert lora["QuantizationConfig"] == {"load_in_4bit": False}
    assert qlora["QuantizationConfig"] == {
        "load_in_4bit": True,
        "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_compute_dtype": "bfloat16",
        "bnb_4bit_use_double_quant": True,
    }
    for t in (lora, qlora):
        assert t["LoraConfig"] == {"r": 8, "lora_alpha": 8, "lora_dropout": 0.0}
        assert t["TrainingArguments"]["output_dir"] == "/mnt/results"
        assert t["TrainingArguments"]["save_strategy"] == "no"
        assert t["TrainingArguments"]["per_device_train_batch_size"] == 1
        assert t["ModelConfig"]["torch_dtype"] == "bfloat16"
        assert t["DataCollator"] == {"mlm": True}
        assert t["DatasetConfig"] == {"shuffle_dataset": True, "train_test_split": 1}


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="lora, qlora"):
        default_training_config("full")


def test_unknown_section_and_top_key_are_refused():
    with pytest.raises(ConfigError, match=r"training_config\.Optimizer"):
        load_training_config("training_config:\n  Optimizer: {lr: 1}\n")
    with pytest.raises(ConfigError, match="top-level key"):
        load_training_config("ModelConfig: {}\n")
    with pytest.raises(ConfigError, match="only 'training_config'"):
        load_training_config("training_config: {}\nextra: 1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_training_config("training_config: [\n")


def test_lora_must_not_quantize_and_qlora_must_choose_exactly_one():
    four = "training_config:\n  QuantizationConfig: {load_in_4bit: true}\n"
    eight = "training_config:\n  QuantizationConfig: {load_in_8bit: true}\n"
    both = "training_config:\n  QuantizationConfig: {load_in_4bit: true, load_in_8bit: true}\n"
    none = "training_config:\n  QuantizationConfig: {load_in_4bit: false}\n"
    assert "must not set load_in_4bit" in training_config_problems(four, "lora")[0]
    assert "must not set" in training_config_problems(eight, "lora")[0]
    assert training_config_problems(four, "qlora") == []
    assert training_config_problems(eight, "qlora") == []
    assert "exactly one" in training_config_problems(both, "qlora")[0]
    assert "exactly one" in training_config_problems(none, "qlora")[0]


def test_user_sections_merge_over_the_method_template():
    cfg = load_training_config("training_config:\n  LoraConfig: {r: 16}\n", "qlora")
    assert cfg["LoraConfig"] == {"r": 16, "lora_alpha": 8, "lora_dropout": 0.0}
    assert cfg["QuantizationConfig"]["load_in_4bit"] is True
    assert cfg["DatasetConfig"]["shuffle_seed"] == 42  # code default, as in Kaito
    assert load_training_config("training_config: {}\n")["QuantizationConfig"] == {"load_in_4bit": False}


@pytest.mark.parametrize(
    "path, ok",
    [
        ("/mnt/results", True),
        ("/mnt/out/run1", True),
        ("/tmp/results", False),
        ("mnt/results", False),
        ("/mnt/../etc", False),
        ("/mnt", False),
        ("", False),
        (None, False),
    ],
)
def test_output_dir_must_be_under_mnt(path, ok):
    assert (output_dir_problem(path) is None) is ok


def test_output_dir_checked_only_in_pod():
    text = "training_config:\n  TrainingArguments: {output_dir: /tmp/x}\n"
    assert "output_dir" in training_config_problems(text, "lora", in_pod=True)[0]
    assert training_config_problems(text, "lora", in_pod=False) == []


def test_dataset_and_lora_keys_are_checked():
    problems = config_problems(
        {"DatasetConfig": {"bogus": 1, "train_test_split": 0}, "LoraConfig": {"r": 0, "use_dora": True}}, "lora"
    )
    text = " | ".join(problems)
    assert "unknown key(s) ['bogus']" in text
    assert "train_test_split" in text
    assert "LoraConfig.r" in text
    assert "use_dora" in text


def test_light_modules_do_not_import_heavy_packages():
    code = (
        "import sys, tuning.config, workload_contract.training_templates, workload_contract.url_policy\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'oras', 'requests') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


REFUSED = {
    "http://169.254.169.254/latest/meta-data/": "metadata",
    "http://169.254.1.1/x": "link-local",
    "http://[fd00:ec2::254]/": "metadata",
    "http://10.0.0.5/data.parquet": "private",
    "http://192.168.1.1/d.csv": "private",
    "http://172.16.0.1/d.csv": "private",
    "http://127.0.0.1:8080/x": "loopback",
    "http://[::1]/x": "loopback",
    "http://[::ffff:127.0.0.1]/x": "loopback",
    "http://2130706433/x": "loopback",
    "http://0x7f.1/x": "loopback",
    "http://0177.0.0.1/x": "loopback",
    "http://127.0.0.1./x": "loopback",
    "http://0xa9.0xfe.0xa9.0xfe/x": "metadata",
    "http://[64:ff9b::a9fe:a9fe]/x": "metadata",
    "http://[2002:7f00:1::]/x": "loopback",
    "http://0.0.0.0/x": "unspecified",
    "http://224.0.0.1/x": "multicast",
    "http://100.64.0.1/x": "not a public address",
    "http://localhost/x": "local machine",
    "http://localhost./x": "local machine",
    "http://foo.localhost/x": "local",
    "http://metadata.google.internal/computeMetadata/v1/": "metadata",
    "http://minio.default.svc.cluster.local/x": "cluster-internal",
    "http://minio/x": "single-label",
    "file:///etc/passwd": "scheme 'file'",
    "ftp://example.com/data.csv": "scheme 'ftp'",
    "gopher://example.com/x": "scheme 'gopher'",
    "example.com/data.csv": "scheme '(none)'",
    "http://x;rm -rf /": "whitespace",
    "http://x;rm${IFS}-rf${IFS}/": "not a valid DNS name",
    "http://example.com/$(reboot)\n": "control",
    "http://`id`.example.com/x": "not a valid DNS name",
    "http:///nohost": "no host",
    "http://example.com:0/x": "port 0",
    "http://example.com:99999/x": "cannot be parsed",
    "": "empty",
}


@pytest.mark.parametrize("url, why", sorted(REFUSED.items()))
def test_static_refusals_name_the_problem(url, why):
    problem = url_problem(url)
    assert problem is not None and why in problem, problem


@pytest.mark.parametrize(
    "url",
    [
        "https://huggingface.co/datasets/philschmid/dolly-15k-oai-style/resolve/main/data/"
        "train-00000-of-00001-54e3756291ca09c6.parquet?download=true",
        "http://example.com/data.csv",
        "https://8.8.8.8/x.json",
        "HTTPS://Storage.Example.ORG:8443/a/b.jsonl",
        "https://[2606:4700::1111]/d.parquet",
    ],
)
def test_public_urls_pass(url):
    assert url_problem(url) is None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_url_problem_never_raises_on_arbitrary_input(text):
    for url in (text, "http://" + text, "https://" + text + "/f.csv"):
        result = url_problem(url)
        assert result is None or isinstance(result, str)


@settings(max_examples=300, deadline=None)
@given(st.ip_addresses())
def test_ip_literals_pass_only_when_public_unicast(ip):
    host = f"[{ip}]" if ip.version == 6 else str(ip)
    problem = url_problem(f"http://{host}/data.parquet")
    embedded = ip.version == 6 and (ip.ipv4_mapped or ip.sixtofour or ip.teredo)
    if not ip.is_global or ip.is_multicast or any(ip in net for net, _ in INTERNAL_RANGES):
        assert problem is not None
    elif not embedded:
        assert problem is None, problem
