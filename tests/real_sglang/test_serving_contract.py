"""One serving contract, held by both runtimes: clients talk to the gateway (the pod's port) with the
official `openai` SDK and with Kaito's /chat shapes; every answer is compared with a transformers+peft
fp32 reference computed here (greedy decoding), so a request routed to the wrong adapter, or an
adapter served at the wrong strength, fails.

The runtime is real: SGLang 0.5.23 on CPU (its only stand-ins are the two GPU-kernel shims, see
shims/README.md) or inference.hf_server. Nothing is mocked.

Every answer the SDK gets is also held to the SDK's own types, strictly: each non-streamed 200 answer
of /v1/chat/completions, /v1/completions and /v1/responses is `model_validate`d (the SDK itself only
constructs, without checking), and so is every streamed chunk (StrictTypes below).
"""

from __future__ import annotations

import http.client
import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import requests

openai = pytest.importorskip("openai")

from openai.types import Completion  # noqa: E402
from openai.types.chat import ChatCompletion, ChatCompletionChunk  # noqa: E402
from openai.types.responses import Response  # noqa: E402
from tiny_models import LLAMA_ADAPTERS, LLAMA_PRESET  # noqa: E402

from inference.hf_protocol import SUFFIX_UNSUPPORTED  # noqa: E402

MESSAGES = [{"role": "user", "content": "hello world how are you"}]
PROMPT = "the quick brown fox"
N = 12  # tokens per answer


def strength(name: str) -> float:
    return float(LLAMA_ADAPTERS[name][1])


def mix(name: str | None) -> tuple:
    return () if name is None else ((name, strength(name)),)


def all_adapters_mix() -> tuple:
    return tuple((name, strength(name)) for name in LLAMA_ADAPTERS)


# path -> (type of a non-streamed answer, type of a streamed chunk)
SDK_TYPES = {
    "/v1/chat/completions": (ChatCompletion, ChatCompletionChunk),
    "/v1/completions": (Completion, Completion),
    "/v1/responses": (Response, None),
}


class _Tee(httpx.SyncByteStream):
    def __init__(self, inner, done):
        self.inner, self.done, self.data = inner, done, bytearray()

    def __iter__(self):
        for chunk in self.inner:
            self.data += chunk
            yield chunk

    def close(self):
        self.inner.close()
        self.done(bytes(self.data))


def _with_a_finish_reason(chunk: dict) -> dict:
    """The SDK types a streamed legacy completion chunk as a Completion, whose finish_reason cannot be
    null; OpenAI's own streams send null until the last chunk. Every other field is checked as is."""
    choices = [
        {**c, "finish_reason": c.get("finish_reason") or "length"} if isinstance(c, dict) else c
        for c in chunk.get("choices") or []
    ]
    return {**chunk, "choices": choices}


class StrictTypes(httpx.BaseTransport):
    """The SDK's transport, recording every answer it reads and validating it against the SDK's types."""

    def __init__(self):
        self.inner = httpx.HTTPTransport()
        self.problems: list[str] = []
        self.validated = 0

    def handle_request(self, request):
        response = self.inner.handle_request(request)
        types = SDK_TYPES.get(request.url.path)
        if response.status_code == 200 and types is not None:
            streamed = response.headers.get("content-type", "").startswith("text/event-stream")
            response.stream = _Tee(response.stream, lambda data: self.check(request.url.path, types, streamed, data))
        return response

    def check(self, path, types, streamed, data: bytes) -> None:
        answer_type, chunk_type = types
        if not streamed:
            objects, kind = [json.loads(data)], answer_type
        else:
            events = [e[6:] for e in data.decode().split("\n\n") if e.startswith("data: ") and e != "data: [DONE]"]
            objects, kind = [json.loads(e) for e in events], chunk_type
        for obj in objects:
            if kind is None:
                continue
            try:
                kind.model_validate(_with_a_finish_reason(obj) if streamed and kind is Completion else obj)
                self.validated += 1
            except Exception as e:  # noqa: BLE001 -- pydantic's ValidationError; recorded for the test to report
                self.problems.append(f"{path}: {kind.__name__}: {e}\n{json.dumps(obj)[:500]}")

    def close(self):
        self.inner.close()


@pytest.fixture(scope="module")
def strict_types(stack):
    return StrictTypes()


@pytest.fixture(scope="module")
def client(stack, strict_types):
    return openai.OpenAI(
        base_url=f"{stack.url}/v1",
        api_key="unused",
        max_retries=0,
        timeout=300,
        http_client=httpx.Client(transport=strict_types, timeout=300),
    )


@pytest.fixture(autouse=True)
def answers_hold_to_the_sdk_types(request):
    """After each test that used the SDK: every answer and chunk it got validated."""
    yield
    if "client" in request.fixturenames:
        strict = request.getfixturevalue("strict_types")
        problems, strict.problems[:] = list(strict.problems), []
        assert not problems, "answers the SDK's types reject:\n" + "\n".join(problems)


def chat(client, model, max_tokens=N, messages=MESSAGES, **kw):
    return client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens, temperature=0, **kw)


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
    stop = full.strip()[len(full.strip()) // 2 :][:2]
    assert stop and stop in full
    got = complete(client, LLAMA_PRESET, stop=[stop])
    assert got.choices[0].text == full[: full.index(stop)]
    assert got.choices[0].finish_reason == "stop"


# --- concurrency --------------------------------------------------------------------------------------


def test_concurrent_mixed_requests_equal_their_sequential_answers(client):
    models = [LLAMA_PRESET, f"{LLAMA_PRESET}:fin", f"{LLAMA_PRESET}:legal", f"{LLAMA_PRESET}:half"] * 3
    prompts = [PROMPT, "hello world", "adapters change", "serving many"] * 3
    sequential = [complete(client, m, prompt=p).choices[0].text for m, p in zip(models, prompts, strict=True)]
    with ThreadPoolExecutor(len(models)) as pool:
        concurrent = list(
            pool.map(
                lambda mp: complete(client, mp[0], prompt=mp[1]).choices[0].text, zip(models, prompts, strict=True)
            )
        )
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
    _honoured_or_refused(
        lambda: chat(client, LLAMA_PRESET, logprobs=True, top_logprobs=2),
        "logprobs",
        lambda r: r.choices[0].logprobs is not None,
    )
    _honoured_or_refused(
        lambda: complete(client, LLAMA_PRESET, logprobs=2), "logprobs", lambda r: r.choices[0].logprobs is not None
    )


def test_echo_is_honoured_or_refused(client):
    _honoured_or_refused(
        lambda: complete(client, LLAMA_PRESET, echo=True), "echo", lambda r: r.choices[0].text.startswith(PROMPT)
    )


def test_list_prompt_is_honoured_or_refused(client, llama_ref):
    want = [llama_ref.complete(p, N)["text"] for p in (PROMPT, "hello world")]
    _honoured_or_refused(
        lambda: complete(client, LLAMA_PRESET, prompt=[PROMPT, "hello world"]),
        "prompt",
        lambda r: [c.text for c in sorted(r.choices, key=lambda c: c.index)] == want,
    )


def test_response_format_is_honoured_or_refused(client):
    def is_json(r):
        try:
            json.loads(r.choices[0].message.content)
            return True
        except ValueError:
            return False

    _honoured_or_refused(
        lambda: chat(client, LLAMA_PRESET, max_tokens=40, response_format={"type": "json_object"}),
        "response_format",
        is_json,
    )


def test_message_content_null_is_a_400(stack):
    r = requests.post(
        f"{stack.url}/v1/chat/completions",
        timeout=60,
        json={"model": LLAMA_PRESET, "max_tokens": 2, "messages": [{"role": "user", "content": None}]},
    )
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
    assert (
        kaito_chat(stack, {"prompt": PROMPT, "model": LLAMA_PRESET, "return_full_text": False, **GREEDY})
        == llama_ref.complete(PROMPT, N)["text"]
    )


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
        assert "/v1/responses" in r.json()["error"]["message"]
        return
    got = client.responses.create(model=f"{LLAMA_PRESET}:fin", input="hello world", max_output_tokens=N, temperature=0)
    assert got.model == f"{LLAMA_PRESET}:fin" and got.output_text
    with pytest.raises(openai.BadRequestError, match="nope"):
        client.responses.create(model=f"{LLAMA_PRESET}:nope", input="hello world", max_output_tokens=N)


# --- answers as OpenAI gives them (six answers real clients would otherwise get wrong) ---------------------------


def test_the_strict_type_check_sees_every_answer_and_chunk(client, strict_types):
    before = strict_types.validated
    chat(client, LLAMA_PRESET, max_tokens=3)
    list(chat(client, LLAMA_PRESET, max_tokens=3, stream=True))
    complete(client, LLAMA_PRESET, max_tokens=3)
    assert strict_types.validated >= before + 3 + 3  # 2 answers, and the chat stream's role + 3 tokens


@pytest.mark.parametrize("kind", ["chat", "completion"])
def test_usage_counts_the_prompt_once_with_n(client, llama_ref, kind):
    want = llama_ref.chat(MESSAGES, N) if kind == "chat" else llama_ref.complete(PROMPT, N)
    call = (
        (lambda: chat(client, LLAMA_PRESET, n=2)) if kind == "chat" else (lambda: complete(client, LLAMA_PRESET, n=2))
    )
    got = call()
    assert len(got.choices) == 2
    assert got.usage.prompt_tokens == want["prompt_tokens"]
    assert got.usage.completion_tokens == 2 * want["completion_tokens"]
    assert got.usage.total_tokens == got.usage.prompt_tokens + got.usage.completion_tokens


def test_a_prompt_longer_than_the_context_is_a_400_naming_the_limit(client):
    long_prompt = "hello world how are you " * 2000  # about 10,000 tokens; the context is 512
    with pytest.raises(openai.BadRequestError) as err:
        complete(client, LLAMA_PRESET, prompt=long_prompt)
    assert "is longer than the model's context length (512 tokens)" in str(err.value)
    with pytest.raises(openai.BadRequestError) as err:
        chat(client, LLAMA_PRESET, messages=[{"role": "user", "content": long_prompt}])
    assert "is longer than the model's context length (512 tokens)" in str(err.value)


def test_prompt_and_max_tokens_over_the_context_is_a_400_naming_the_limit(client):
    with pytest.raises(openai.BadRequestError) as err:
        complete(client, LLAMA_PRESET, max_tokens=510)
    assert "maximum context length of 512 tokens" in str(err.value)


def test_max_tokens_over_the_context_is_a_400_naming_the_field(client):
    with pytest.raises(openai.BadRequestError) as err:
        complete(client, LLAMA_PRESET, max_tokens=100_000)
    assert "`max_tokens`" in str(err.value) and "512" in str(err.value)


def test_seed_is_honoured_or_refused(client, stack):
    """SGLang 0.5.23 samples repeatably only with --enable-deterministic-inference, which it refuses
    on CPU (and the launcher does not pass): the gateway refuses `seed` there, as the README says."""

    def sampled(seed):
        return (
            client.chat.completions.create(
                model=LLAMA_PRESET, messages=MESSAGES, max_tokens=N, temperature=1.0, seed=seed
            )
            .choices[0]
            .message.content
        )

    try:
        first = sampled(7)
    except openai.BadRequestError as e:
        assert "`seed`" in str(e), e
        assert stack.runtime == "sglang", "the transformers runtime honours seed"
        return
    assert stack.runtime == "transformers", "SGLang answered a seed it does not honour"
    assert sampled(7) == first, "the same seed gave another answer"
    assert any(sampled(s) != first for s in (8, 9, 10)), "other seeds gave the same answer: sampling is not random"


def test_suffix_is_refused_with_one_message_on_both_runtimes(client):
    with pytest.raises(openai.BadRequestError) as err:
        complete(client, LLAMA_PRESET, suffix=" the end")
    assert err.value.body["message"] == SUFFIX_UNSUPPORTED


def _one_token_with_two_stops(llama_ref):
    """Two stop strings that one generated token holds both of (the later one first in the list), and
    neither in the text before that token; the answer must end before the earlier one."""
    want = llama_ref.complete(PROMPT, 40)
    text, before = want["text"], ""
    for piece in want["pieces"]:
        if len(piece) >= 4 and piece.isascii() and piece[:2] != piece[2:4]:
            first, second = piece[:2], piece[2:4]
            if first not in before + piece[:1] and second not in before + piece[:3]:
                return [second, first], text[: text.index(first)]
        before += piece
    pytest.fail(f"no generated token holds two stop strings: {want['pieces']}")


def test_the_answer_ends_at_the_earliest_stop_string_not_the_first_listed(client, llama_ref):
    stops, expected = _one_token_with_two_stops(llama_ref)
    for order in (stops, stops[::-1]):
        got = complete(client, LLAMA_PRESET, max_tokens=40, stop=order)
        assert got.choices[0].text == expected, order
        assert got.choices[0].finish_reason == "stop"
        streamed = [c for c in complete(client, LLAMA_PRESET, max_tokens=40, stop=order, stream=True) if c.choices]
        assert "".join(c.choices[0].text for c in streamed) == expected, order


def test_embeddings_are_an_openai_shaped_404(client, stack):
    with pytest.raises(openai.NotFoundError) as err:
        client.embeddings.create(model=LLAMA_PRESET, input="hello")
    assert "/v1/embeddings" in err.value.body["message"]
    r = requests.post(f"{stack.url}/v1/embeddings", json={"model": LLAMA_PRESET, "input": "x"}, timeout=30)
    assert r.headers["Content-Type"].startswith("application/json") and r.json()["error"]["message"]


@pytest.mark.parametrize(
    "path",
    [
        "/v1/responses/..%2F..%2Fflush_cache",
        "/v1/responses/..%2F..%2Fget_server_info",
        "/v1/responses/..%2F..%2Fstart_profile",
        "/v1/responses/%2E%2E%2F%2E%2E%2Fmetrics",
    ],
)
def test_admin_endpoints_are_not_reachable_through_the_gateway(stack, path):
    host, port = stack.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("GET", path)  # sent as written: no client normalises it
    r = conn.getresponse()
    body = r.read()
    conn.close()
    assert r.status == 404, body[:300]
    assert json.loads(body)["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("field, value", [("n", 17), ("top_logprobs", 21), ("best_of", 17)])
def test_work_caps_are_a_400_naming_the_field(client, field, value):
    extra = {"logprobs": True} if field == "top_logprobs" else {}
    call = (
        (lambda: complete(client, LLAMA_PRESET, **{field: value}))
        if field == "best_of"
        else (lambda: chat(client, LLAMA_PRESET, **extra, **{field: value}))
    )
    with pytest.raises(openai.BadRequestError) as err:
        call()
    assert f"`{field}`" in str(err.value)
