"""The transformers runtime's OpenAI rules (inference.hf_protocol): a field is honoured or refused by name,
finish_reason follows what ended the answer, streamed text is cut at stop strings like the full answer."""

import pytest

from inference.hf_protocol import (
    BadRequest,
    StopStringCutter,
    check_request,
    cut_at_stop,
    finish_reason,
    max_new_tokens,
)


@pytest.mark.parametrize(
    "field,value",
    [
        ("n", 0),
        ("n", 17),
        ("n", "2"),
        ("best_of", 3),
        ("logprobs", True),
        ("top_logprobs", 2),
        ("response_format", {"type": "json_object"}),
        ("tools", [{"type": "function"}]),
        ("logit_bias", {"5": 10}),
        ("suffix", "end"),
        ("presence_penalty", 0.5),
        ("frequency_penalty", -1),
    ],
)
def test_unsupported_fields_are_refused_by_name(field, value):
    with pytest.raises(BadRequest, match=f"`{field}`"):
        check_request({"messages": [{"role": "user", "content": "hi"}], field: value}, chat=True)


@pytest.mark.parametrize(
    "field,value",
    [
        ("n", 1),
        ("n", None),
        ("n", 3),
        ("logprobs", False),
        ("logprobs", None),
        ("response_format", {"type": "text"}),
        ("tool_choice", "none"),
        ("tools", []),
        ("presence_penalty", 0),
        ("frequency_penalty", 0.0),
    ],
)
def test_off_values_are_accepted(field, value):
    assert check_request({"messages": [{"role": "user", "content": "hi"}], field: value}, chat=True) == []


def test_completions_logprobs_zero_still_asks_for_logprobs():
    with pytest.raises(BadRequest, match="`logprobs`"):
        check_request({"prompt": "x", "logprobs": 0}, chat=False)


def test_prompts_string_list_and_refusals():
    assert check_request({"prompt": "a"}, chat=False) == ["a"]
    assert check_request({"prompt": ["a", "b"]}, chat=False) == ["a", "b"]
    with pytest.raises(BadRequest, match=r"`prompt`.*streamed"):
        check_request({"prompt": ["a", "b"], "stream": True}, chat=False)
    with pytest.raises(BadRequest, match=r"`prompt`.*token-id"):
        check_request({"prompt": [1, 2, 3]}, chat=False)
    with pytest.raises(BadRequest, match="`echo`"):
        check_request({"messages": [{"role": "user", "content": "x"}], "echo": True}, chat=True)


def test_max_tokens_must_be_positive():
    assert max_new_tokens({}, 16) == 16
    assert max_new_tokens({"max_completion_tokens": 5, "max_tokens": 9}, 16) == 5
    for bad in (0, -1, 1.5, True, "3"):
        with pytest.raises(BadRequest, match="`max_tokens`"):
            max_new_tokens({"max_tokens": bad}, 16)


def test_finish_reason():
    eos = {2}
    assert finish_reason([5, 6, 7], eos, 3, False) == "length"
    assert finish_reason([5, 2], eos, 3, False) == "stop"
    assert finish_reason([5, 6, 2], eos, 3, False) == "stop"  # EOS as the last allowed token
    assert finish_reason([5, 6, 7], eos, 3, True) == "stop"  # a stop string ended it
    assert finish_reason([5], eos, 3, False) == "stop"


def test_cut_at_stop_uses_the_earliest_stop():
    assert cut_at_stop("hello world", ["wor", "lo"]) == ("hel", True)
    assert cut_at_stop("hello", ["x"]) == ("hello", False)


@pytest.mark.parametrize("pieces", [["hel", "lo wo", "rld"], ["h", "e", "l", "l", "o", " ", "w"], ["hello world"]])
def test_stop_cutter_streams_what_the_full_answer_has(pieces):
    cutter = StopStringCutter(["o w"])
    out = "".join(cutter.feed(p) for p in pieces) + cutter.finish()
    assert out == cut_at_stop("".join(pieces), ["o w"])[0] == "hell"


def test_stop_cutter_releases_a_held_back_prefix_that_was_not_a_stop():
    cutter = StopStringCutter(["abc"])
    assert cutter.feed("xab") == "x"  # "ab" may start "abc": held back
    assert cutter.feed("d") == "abd"  # it did not
    assert cutter.feed("ab") == ""
    assert cutter.finish() == "ab"


def test_n_choices_are_not_streamed():
    with pytest.raises(BadRequest, match=r"`n`.*stream"):
        check_request({"prompt": "x", "n": 2, "stream": True}, chat=False)
    assert check_request({"prompt": "x", "n": 1, "stream": True}, chat=False) == ["x"]


def test_a_prompt_over_the_context_is_refused_in_sglangs_words():
    from inference.hf_protocol import token_budget

    with pytest.raises(
        BadRequest,
        match=r"^The input \(10018 tokens\) is longer than the model's context length "
        r"\(512 tokens\)\.$",
    ):
        token_budget(10018, None, 256, 512)
    with pytest.raises(BadRequest, match=r"The input \(512 tokens\)"):
        token_budget(512, 1, 256, 512)  # equal is over, as SGLang counts
    with pytest.raises(
        BadRequest,
        match=r"maximum context length of 512 tokens\. You requested a total of 530 tokens: "
        r"30 tokens from the input messages and 500 tokens for the completion",
    ):
        token_budget(30, 500, 256, 512)


def test_an_unrequested_budget_shrinks_to_the_context_and_a_requested_one_is_kept():
    from inference.hf_protocol import token_budget

    assert token_budget(500, None, 256, 512) == 11
    assert token_budget(30, None, 256, 512) == 256
    assert token_budget(30, 400, 256, 512) == 400
    assert token_budget(10**6, None, 256, None) == 256  # context unknown: nothing to check against


def test_suffix_message_is_the_gateways():
    from inference.gateway.translation import Served, route_openai
    from inference.gateway.validation import RequestError
    from inference.hf_protocol import SUFFIX_UNSUPPORTED

    with pytest.raises(BadRequest) as runtime:
        check_request({"prompt": "x", "suffix": "end"}, chat=False)
    with pytest.raises(RequestError) as gateway:
        route_openai({"prompt": "x", "suffix": "end"}, Served("m"))
    assert str(runtime.value) == str(gateway.value) == SUFFIX_UNSUPPORTED
    assert "SGLang runtime supports" not in SUFFIX_UNSUPPORTED


def test_the_earliest_stop_string_in_the_text_wins_whatever_the_list_order():
    assert cut_at_stop("\ufffdroadapters", ["rs", "ad"]) == ("\ufffdro", True)
    assert cut_at_stop("\ufffdroadapters", ["ad", "rs"]) == ("\ufffdro", True)
