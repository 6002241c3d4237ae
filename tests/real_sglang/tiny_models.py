"""Tiny random models for the serving tests: a Llama and a Phi-3 with a tokenizer trained here and peft
LoRA adapters, plus a transformers+peft fp32 reference that computes what a server must answer.

Nothing is downloaded. Runs in the test venv (transformers, peft, torch); the served copies are read
by the runtime under test (SGLang in its own venv, or inference.hf_server).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from tuning_support.tiny import tiny_config, tiny_model_class

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "kubernetes runs gpu nodes for language models",
    "adapters change what the model says",
    "hello world how are you today",
    "serving many adapters on one base model",
] * 4
# A minimal chat template: both runtimes render it with the tokenizer (SGLang and hf_server alike).
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def train_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


@dataclass(frozen=True)
class AdapterPlan:
    name: str
    rank: int
    targets: tuple[str, ...]
    seed: int
    alpha: int = 16
    use_rslora: bool = False


@dataclass
class TinyModel:
    family: str  # "llama" or "phi3"
    weights_dir: Path
    adapters_dir: Path
    adapters: dict[str, AdapterPlan] = field(default_factory=dict)


def _config(family: str, tok):
    return tiny_config(family, tok, max_position_embeddings=512, tie_word_embeddings=False)


def build(root: Path, family: str, adapters: list[AdapterPlan], seed: int = 0) -> TinyModel:
    """Weights (fp32, random with a larger spread so greedy choices are clear-cut) and peft adapters."""
    import peft

    tok = train_tokenizer()
    cfg = _config(family, tok)
    torch.manual_seed(seed)
    model = tiny_model_class(family)(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.2)
        # Special tokens get logit 0, below the best of ~400 random logits: answers run to max_tokens
        # (finish_reason "length"), so every test compares a full-length answer.
        model.lm_head.weight[tok.all_special_ids] = 0.0
    weights = root / f"{family}-weights"
    model.save_pretrained(weights)
    tok.save_pretrained(weights)
    tiny = TinyModel(family, weights, root / f"{family}-adapters")
    for plan in adapters:
        torch.manual_seed(plan.seed)
        base = tiny_model_class(family)(cfg)
        lora = peft.LoraConfig(
            r=plan.rank,
            lora_alpha=plan.alpha,
            target_modules=list(plan.targets),
            use_rslora=plan.use_rslora,
            init_lora_weights=False,
        )
        pm = peft.get_peft_model(base, lora)
        with torch.no_grad():
            for n, p in pm.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.3)
        pm.save_pretrained(tiny.adapters_dir / plan.name)
        tiny.adapters[plan.name] = plan
    return tiny


class Reference:
    """Greedy generation with transformers + peft in fp32: what each served answer must equal."""

    def __init__(self, tiny: TinyModel):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tiny = tiny
        self.tokenizer = AutoTokenizer.from_pretrained(tiny.weights_dir)
        self._base = lambda: AutoModelForCausalLM.from_pretrained(tiny.weights_dir, dtype=torch.float32).eval()
        self._cache: dict[tuple, object] = {}

    def _model(self, mix: tuple[tuple[str, float], ...]):
        """The base model with the named adapters applied at the given PEFT scale (strength)."""
        if mix not in self._cache:
            import peft

            model = self._base()
            if mix:
                # peft makes adapter names module attributes: "half" would collide with Module.half
                names = [f"adapter_{i}" for i in range(len(mix))]
                for i, ((name, _), peft_name) in enumerate(zip(mix, names, strict=True)):
                    path = str(self.tiny.adapters_dir / name)
                    if i == 0:
                        model = peft.PeftModel.from_pretrained(model, path, adapter_name=peft_name)
                    else:
                        model.load_adapter(path, adapter_name=peft_name)
                model.base_model.set_adapter(names)
                for module in model.modules():
                    if isinstance(module, peft.tuners.lora.LoraLayer):
                        for (_, strength), peft_name in zip(mix, names, strict=True):
                            if peft_name in module.scaling:
                                module.set_scale(peft_name, strength)
            self._cache[mix] = model.eval()
        return self._cache[mix]

    def complete(self, prompt: str, max_tokens: int, mix=()) -> dict:
        ids = self.tokenizer(prompt, return_tensors="pt")["input_ids"]
        return self._greedy(ids, max_tokens, tuple(mix))

    def chat(self, messages: list[dict], max_tokens: int, mix=()) -> dict:
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = self.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        return self._greedy(ids, max_tokens, tuple(mix))

    def _greedy(self, ids, max_tokens: int, mix) -> dict:
        model = self._model(mix)
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_tokens,
                do_sample=False,
                eos_token_id=self.tokenizer.eos_token_id,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        new = out[0][ids.shape[1] :].tolist()
        finished = bool(new) and new[-1] == self.tokenizer.eos_token_id
        return {
            "text": self.tokenizer.decode(new, skip_special_tokens=True),
            "prompt_tokens": int(ids.shape[1]),
            "completion_tokens": len(new),
            "finish_reason": "stop" if finished else "length",
            "pieces": [self.tokenizer.decode([t], skip_special_tokens=True) for t in new],
        }


# The Workspaces the tests serve. name -> (how the adapter is trained, strength as the Workspace says it)
LLAMA_PRESET = "llama-3.1-8b-instruct"
PHI3_PRESET = "phi-3-mini-4k-instruct"
LLAMA_ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# name -> (plan, strength as the Workspace says it)
LLAMA_ADAPTERS = {
    "fin": (AdapterPlan("fin", 8, LLAMA_ALL, seed=11), "1.0"),
    "legal": (AdapterPlan("legal", 4, ("q_proj", "v_proj", "o_proj", "down_proj"), seed=12), "1.0"),
    "half": (AdapterPlan("half", 8, LLAMA_ALL, seed=13), "0.5"),
    "rs": (AdapterPlan("rs", 8, ("q_proj", "k_proj", "v_proj", "down_proj"), seed=14, use_rslora=True), "1.0"),
}
PHI3_ADAPTERS = {
    "fused": (AdapterPlan("fused", 8, ("qkv_proj", "o_proj", "gate_up_proj", "down_proj"), seed=21), "1.0"),
}
