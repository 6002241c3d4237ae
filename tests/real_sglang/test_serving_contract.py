"""One serving contract, held by both runtimes: clients talk to the gateway (the pod's port) with the
official `openai` SDK and with Kaito's /chat shapes; every answer is compared with a transformers+peft
fp32 reference computed here (greedy decoding), so a request routed to the wrong adapter, or an
adapter served at the wrong strength, fails.

The runtime is real: SGLang 0.5.23 on CPU (its only stand-ins are the two GPU-kernel shims, see
shims/README.md) or inference.hf_server. Nothing is mocked.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

openai = pytest.importorskip("openai")

from tiny_models import LLAMA_ADAPTERS, LLAMA_PRESET  # noqa: E402

MESSAGES = [{"role": "user", "content": "hello world how are you"}]
PROMPT = "the quick brown fox"
N = 12  # tokens per answer


def strength(name: str) -> float:
    return float(LLAMA_ADAPTERS[name][1])


def mix(name: str | None) -> tuple:
    return () if name is None else ((name, strength(name)),)


def all_adapters_mix() -> tuple:
    return tuple((name, strength(name)) for name in LLAMA_ADAPTERS)


@pytest.fixture(scope="module")
def client(stack):
    return openai.OpenAI(base_url=f"{stack.url}/v1", api_key="unused", max_retries=0, timeout=300)


def chat(client, model, max_tokens=N, messages=MESSAGES, **kw):
    return client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens, temperature=0,
                                          **kw)


def complete(client, model, max_tokens=N, prompt=PROMPT, **kw):
    return client.completions.create(model=model, prompt=prompt, max_tokens=max_tokens, temperature=0, **kw)


# --- models -------------------------------------------------------------------------------------------

def test_models_list_names_the_preset_and_each_adapter(client, stack):
    ids = {m.id for m in client.models.list().data}
    assert {LLAMA_PRESET} | {f"{LLAMA_PRESET}:{a}" for a in LLAMA_ADAPTERS} <= ids
    listing = requests.get(f"{stack.url}/v1/models", timeout=30).json()
    base = next(m for m in listing["data"] if m["id"] == LLAMA_PRESET)
    assert base["max_model_len"] == 512


def test_models_retrieve_one(client):
    assert client.models.retrieve(f"{LLAMA_PRESET}:fin").id == f"{LLAMA_PRESET}:fin"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")


# --- answers equal the reference ----------------------------------------------------------------------

def test_chat_base_model_equals_reference(client, llama_ref):
    want = llama_ref.chat(MESSAGES, N)
    got = chat(client, LLAMA_PRESET)
    assert got.choices[0].message.role == "assistant"
    assert got.choices[0].message.content == want["text"]
    assert got.choices[0].finish_reason == want["finish_reason"]
    assert got.usage.prompt_tokens == want["prompt_tokens"]
    assert got.usage.completion_tokens == want["completion_tokens"]
    assert got.usage.total_tokens == want["prompt_tokens"] + want["completion_tokens"]


def test_completion_base_model_equals_reference(client, llama_ref):
    want = llama_ref.complete(PROMPT, N)
    got = complete(client, LLAMA_PRESET)
    assert got.choices[0].text == want["text"]
    assert got.usage.completion_tokens == want["completion_tokens"]


@pytest.mark.parametrize("model", [f"{LLAMA_PRESET}:fin", "fin"], ids=["preset:adapter", "bare-adapter"])
def test_adapter_selected_by_name(client, llama_ref, model):
    want = llama_ref.chat(MESSAGES, N, mix("fin"))
    assert want["text"] != llama_ref.chat(MESSAGES, N)["text"], "the adapter must change the answer"
    assert chat(client, model).choices[0].message.content == want["text"]


def test_each_adapter_is_its_own(client, llama_ref):
    answers = {name: complete(client, f"{LLAMA_PRESET}:{name}").choices[0].text for name in LLAMA_ADAPTERS}
    for name, text in answers.items():
        assert text == llama_ref.complete(PROMPT, N, mix(name))["text"], name
    assert len(set(answers.values())) == len(answers)


def test_strength_half_is_the_peft_scaled_adapter(client, llama_ref):
    want = llama_ref.complete(PROMPT, N, (("half", 0.5),))
    assert want["text"] != llama_ref.complete(PROMPT, N, (("half", 1.0),))["text"]
    assert complete(client, f"{LLAMA_PRESET}:half").choices[0].text == want["text"]


def test_rslora_adapter_is_scaled_as_peft_does(client, llama_ref):
    want = llama_ref.complete(PROMPT, N, mix("rs"))
    assert complete(client, f"{LLAMA_PRESET}:rs").choices[0].text == want["text"]


def test_unknown_adapter_is_a_400_naming_it(client):
    for model in (f"{LLAMA_PRESET}:nope", "nope", "other-model:fin"):
        with pytest.raises(openai.BadRequestError) as err:
            chat(client, model)
        assert "nope" in str(err.value) or "other-model" in str(err.value)


# --- streaming ----------------------------------------------------------------------------------------

def test_chat_stream_equals_non_streamed_answer_with_role_finish_and_usage(client, llama_ref):
    want = llama_ref.chat(MESSAGES, N, mix("fin"))
    chunks = list(chat(client, f"{LLAMA_PRESET}:fin", stream=True, stream_options={"include_usage": True}))
    content_chunks = [c for c in chunks if c.choices]
    assert content_chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in content_chunks) == want["text"]
    assert content_chunks[-1].choices[0].finish_reason == want["finish_reason"]
    usage = [c.usage for c in chunks if c.usage is not None]
    assert usage and usage[-1].completion_tokens == want["completion_tokens"]
    assert usage[-1].prompt_tokens == want["prompt_tokens"]


def test_completion_stream_equals_reference(client, llama_ref):
    want = llama_ref.complete(PROMPT, N)
    chunks = [c for c in complete(client, LLAMA_PRESET, stream=True) if c.choices]
    assert "".join(c.choices[0].text for c in chunks) == want["text"]
    assert chunks[-1].choices[0].finish_reason == want["finish_reason"]


# --- stop and length ----------------------------------------------------------------------------------

def test_max_tokens_cut_gives_finish_reason_length(client, llama_ref):
    want = llama_ref.complete(PROMPT, 3)
    assert want["finish_reason"] == "length"
    got = complete(client, LLAMA_PRESET, max_tokens=3)
    assert got.choices[0].finish_reason == "length"
    assert got.usage.completion_tokens == 3
    got = chat(client, LLAMA_PRESET, max_tokens=3)
    assert got.choices[0].finish_reason == "length"


def test_stop_string_ends_the_answer_before_it(client, llama_ref):
    full = llama_ref.complete(PROMPT, N)["text"]
    stop = full.strip()[len(full.strip()) // 2:][:2]
    assert stop and stop in full
    got = complete(client, LLAMA_PRESET, stop=[stop])
    assert got.choices[0].text == full[:full.index(stop)]
    assert got.choices[0].finish_reason == "stop"


# --- concurrency --------------------------------------------------------------------------------------

def test_concurrent_mixed_requests_equal_their_sequential_answers(client):
    models = [LLAMA_PRESET, f"{LLAMA_PRESET}:fin", f"{LLAMA_PRESET}:legal", f"{LLAMA_PRESET}:half"] * 3
    prompts = [PROMPT, "hello world", "adapters change", "serving many"] * 3
    sequential = [complete(client, m, prompt=p).choices[0].text for m, p in zip(models, prompts, strict=True)]
    with ThreadPoolExecutor(len(models)) as pool:
        concurrent = list(pool.map(lambda mp: complete(client, mp[0], prompt=mp[1]).choices[0].text,
                                   zip(models, prompts, strict=True)))
    assert concurrent == sequential


# --- fields a runtime either honours or refuses by name ------------------------------------------------

def _honoured_or_refused(call, field: str, honoured) -> None:
    try:
        result = call()
    except openai.BadRequestError as e:
        assert field in str(e), f"400 must name `{field}`: {e}"
        return
    assert honoured(result), f"`{field}` answered 200 but was not honoured: {result}"


def test_n_is_honoured_or_refused(client):
    _honoured_or_refused(lambda: complete(client, LLAMA_PRESET, n=2), "n", lambda r: len(r.choices) == 2)


def test_logprobs_are_honoured_or_refused(client):
    _honoured_or_refused(lambda: chat(client, LLAMA_PRESET, logprobs=True, top_logprobs=2), "logprobs",
                         lambda r: r.choices[0].logprobs is not None)
    _honoured_or_refused(lambda: complete(client, LLAMA_PRESET, logprobs=2), "logprobs",
                         lambda r: r.choices[0].logprobs is not None)


def test_echo_is_honoured_or_refused(client):
    _honoured_or_refused(lambda: complete(client, LLAMA_PRESET, echo=True), "echo",
                         lambda r: r.choices[0].text.startswith(PROMPT))


def test_list_prompt_is_honoured_or_refused(client, llama_ref):
    want = [llama_ref.complete(p, N)["text"] for p in (PROMPT, "hello world")]
    _honoured_or_refused(lambda: complete(client, LLAMA_PRESET, prompt=[PROMPT, "hello world"]), "prompt",
                         lambda r: [c.text for c in sorted(r.choices, key=lambda c: c.index)] == want)


def test_response_format_is_honoured_or_refused(client):
    def is_json(r):
        try:
            json.loads(r.choices[0].message.content)
            return True
        except ValueError:
            return False

    _honoured_or_refused(lambda: chat(client, LLAMA_PRESET, max_tokens=40,
                                      response_format={"type": "json_object"}), "response_format", is_json)


def test_message_content_null_is_a_400(stack):
    r = requests.post(f"{stack.url}/v1/chat/completions", timeout=60, json={
        "model": LLAMA_PRESET, "max_tokens": 2, "messages": [{"role": "user", "content": None}]})
    assert r.status_code == 400
    assert "content" in r.text


# --- Kaito /chat --------------------------------------------------------------------------------------

def kaito_chat(stack, body):
    r = requests.post(f"{stack.url}/chat", json=body, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()["Result"]


GREEDY = {"generate_kwargs": {"do_sample": False, "max_new_tokens": N}}


def test_kaito_chat_prompt_with_a_named_adapter(stack, llama_ref):
    want = llama_ref.complete(PROMPT, N, mix("legal"))["text"]
    assert kaito_chat(stack, {"prompt": PROMPT, "model": "legal", **GREEDY}) == PROMPT + want
    assert kaito_chat(stack, {"prompt": PROMPT, "model": LLAMA_PRESET, "return_full_text": False, **GREEDY}) == \
        llama_ref.complete(PROMPT, N)["text"]


def test_kaito_chat_messages(stack, llama_ref):
    want = llama_ref.chat(MESSAGES, N, mix("fin"))["text"]
    assert kaito_chat(stack, {"messages": MESSAGES, "model": f"{LLAMA_PRESET}:fin", **GREEDY}) == want


def test_kaito_chat_default_applies_all_adapters_weighted_by_strength(stack, llama_ref):
    want = llama_ref.complete(PROMPT, N, all_adapters_mix())["text"]
    assert want not in {llama_ref.complete(PROMPT, N, mix(a))["text"] for a in LLAMA_ADAPTERS}
    assert kaito_chat(stack, {"prompt": PROMPT, "return_full_text": False, **GREEDY}) == want


def test_kaito_chat_unknown_adapter_is_a_400(stack):
    r = requests.post(f"{stack.url}/chat", json={"prompt": PROMPT, "model": "nope"}, timeout=60)
    assert r.status_code == 400
    assert "nope" in r.json()["detail"]


# --- the Responses API: SGLang has it, the gateway passes it through with `model` checked -------------

def test_responses_api(stack, client):
    if stack.runtime == "transformers":
        r = requests.post(f"{stack.url}/v1/responses", json={"model": LLAMA_PRESET, "input": "hi"}, timeout=60)
        assert r.status_code == 404  # documented: the transformers runtime has no Responses API
        return
    got = client.responses.create(model=f"{LLAMA_PRESET}:fin", input="hello world", max_output_tokens=N,
                                  temperature=0)
    assert got.model == f"{LLAMA_PRESET}:fin" and got.output_text
    with pytest.raises(openai.BadRequestError, match="nope"):
        client.responses.create(model=f"{LLAMA_PRESET}:nope", input="hello world", max_output_tokens=N)
