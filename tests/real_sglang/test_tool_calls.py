"""Tool calling end to end on the real SGLang server (CPU): Kaito's `vllm: tool-call-parser: hermes` in the
inference.config file reaches SGLang through the launcher's mapping, and the `openai` SDK's `tools=` request
through the gateway gets `tool_calls` back. The tiny random model cannot choose a tool by itself, so the
request names the tool (`tool_choice`), which SGLang enforces with a grammar over the tool's schema; what is
tested is the path (config -> argv -> SGLang -> gateway -> SDK), not the model's judgement."""

from __future__ import annotations

import json

import harness
import pytest
from conftest import _require_sglang
from tiny_models import LLAMA_PRESET

openai = pytest.importorskip("openai")

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "strict": True,  # SGLang then constrains the arguments to the schema, not just to JSON
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "enum": ["Oslo", "Paris"]}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


@pytest.fixture(scope="module")
def tool_stack(tiny_llama, tmp_path_factory):
    _require_sglang()
    work = tmp_path_factory.mktemp("work-tools")
    config = work / "inference_config.yaml"
    config.write_text("vllm:\n  tool-call-parser: hermes\n  enable-auto-tool-choice: true\n")
    rendered_argv = harness.local_argv

    def with_config(*args, **kwargs):  # the pod's --config-file, as the hook renders it for inference.config
        argv = rendered_argv(*args, **kwargs)
        cut = argv.index("--") if "--" in argv else len(argv)
        return argv[:cut] + ["--config-file", str(config)] + argv[cut:]

    harness.local_argv = with_config
    try:
        stack = harness.start_stack(
            "sglang", LLAMA_PRESET, [], tiny_llama.weights_dir, tiny_llama.adapters_dir, work / "adapters", work
        )
    finally:
        harness.local_argv = rendered_argv
    try:
        yield stack
    finally:
        stack.stop()


def test_the_config_maps_to_sglangs_tool_call_parser(tool_stack):
    argv = tool_stack.argv
    assert argv[argv.index("--config-file") + 1].endswith("inference_config.yaml")
    assert "--tool-call-parser hermes" in tool_stack.log_tail(200000)


def test_the_openai_sdk_gets_tool_calls_back_through_the_gateway(tool_stack):
    client = openai.OpenAI(base_url=f"{tool_stack.url}/v1", api_key="unused")
    response = client.chat.completions.create(
        model=LLAMA_PRESET,
        messages=[{"role": "user", "content": "What is the weather in Oslo?"}],
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=96,
        temperature=0,
    )
    message = response.choices[0].message
    assert message.tool_calls, message
    call = message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["city"] in ("Oslo", "Paris")
