"""The pre-Ampere fallback end to end on CPU: `python -m inference.launch --runtime transformers` with a
tiny random Llama and a tokenizer trained here (no downloads), two LoRA adapters (one at strength 0.5).
The launcher scales the adapter, starts the gateway on its port and execs `inference.hf_server`; the
test talks to the gateway over real HTTP. Nothing is mocked (CPU stands in for the pre-Ampere GPU).
What clients see (answers, adapters, strength, streaming, stop, usage) is the serving contract in
tests/real_sglang/test_serving_contract.py, run against this runtime and SGLang alike; this module
keeps the launcher's lifecycle checks."""

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from inference_support.launcher import ONE_NODE, transformers_launch
from inference_support.stub_sglang import wait_http
from loopback_support import free_port
from tuning_support.tiny import tiny_config

pytestmark = pytest.mark.integration  # starts the transformers server as a process

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

REPO = Path(__file__).resolve().parents[1]
SERVED = "tiny-llama"
CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "kubernetes runs gpu nodes for language models",
    "adapters change what the model says",
    "hello world how are you today",
] * 4
TEMPLATE = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        CORPUS,
        trainers.BpeTrainer(
            vocab_size=300,
            special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    fast.chat_template = TEMPLATE
    return fast


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    tok = build_tokenizer()
    torch.manual_seed(0)
    cfg = tiny_config("llama", tok)
    model = transformers.LlamaForCausalLM(cfg)
    model.generation_config.eos_token_id = None  # never stop early: a fixed number of tokens
    model.save_pretrained(root / "weights")
    tok.save_pretrained(root / "weights")
    for i, name in enumerate(["fin", "half"]):
        torch.manual_seed(10 + i)
        pm = peft.get_peft_model(
            transformers.LlamaForCausalLM(cfg),
            peft.LoraConfig(
                r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False
            ),
        )
        with torch.no_grad():
            for n, p in pm.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.5)
        pm.save_pretrained(root / "adapters" / name)
    port, rport = free_port(), free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            *transformers_launch(
                SERVED,
                root / "weights",
                root / "adapters",
                port,
                rport,
                root / "work",
                "--adapter",
                "fin",
                "--adapter",
                "half=0.5",
                *ONE_NODE,
            ),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", 90)
    except Exception as err:
        proc.kill()
        raise RuntimeError(proc.communicate(timeout=5)[0].decode(errors="replace")[-3000:]) from err
    yield url, proc, root, port
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


def chat(url, model, content="hello world", **kw):
    r = requests.post(
        f"{url}/v1/chat/completions",
        json={
            "model": model,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": 8,
            "temperature": 0,
            **kw,
        },
        timeout=60,
    )
    return r


def test_scaled_copy_made_for_strength(stack):
    _, _, root, _ = stack
    assert (root / "work" / "half" / "adapter_model.safetensors").exists()
    assert not (root / "work" / "fin").exists()


def test_gateway_goes_when_runtime_goes(stack):
    """Runs last in this module: the runtime (the exec'd launcher) is stopped; the gateway must follow."""
    _, proc, _, port = stack
    proc.send_signal(signal.SIGTERM)
    proc.wait(20)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return
        time.sleep(0.1)
    pytest.fail("gateway still listening after the runtime exited")
