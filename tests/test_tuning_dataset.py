"""Dataset discovery, reading (parquet/json/jsonl/csv), row normalisation and loss masking."""

import copy
import csv
import json

import pytest
from tuning_support import tiny

from tuning.dataset import DatasetError, Example, find_dataset_files, load_examples, row_to_example, select_for_training
from tuning.render import IGNORE, features, pad_batch, render


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return tiny.make_tokenizer(str(tmp_path_factory.mktemp("tok")))


def _write_all_formats(root):
    rows = tiny.chat_rows(2)
    tiny.write_parquet(str(root / "a" / "chat.parquet"), rows)
    tiny.write_jsonl(str(root / "b" / "pc.jsonl"), [{"prompt": "Say hi", "completion": "Hello operator!"}])
    (root / "c.json").write_text(json.dumps([{"text": "One two three."}, {"text": "Four five."}]))
    with open(root / "d.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["messages"])
        w.writeheader()
        w.writerow({"messages": json.dumps(rows[0]["messages"])})
    (root / "notes.txt").write_text("ignored")
    (root / ".hidden.json").write_text("[]")


def test_finds_and_reads_every_supported_format(tmp_path):
    _write_all_formats(tmp_path)
    files = [p.replace(str(tmp_path) + "/", "") for p in find_dataset_files(str(tmp_path))]
    assert files == ["c.json", "d.csv", "a/chat.parquet", "b/pc.jsonl"]
    examples = load_examples(str(tmp_path), {})
    assert len(examples) == 2 + 1 + 2 + 1
    assert sum(ex.conversational for ex in examples) == 4
    assert [ex.completion for ex in examples if not ex.conversational] == ["One two three.", "Four five."]
    assert [p.rsplit("/", 1)[1] for p in find_dataset_files(str(tmp_path), "parquet")] == ["chat.parquet"]
    only = load_examples(str(tmp_path), {"dataset_path": "b/pc.jsonl"})
    assert only == [
        Example(
            prompt=[{"role": "user", "content": "Say hi"}],
            completion=[{"role": "assistant", "content": "Hello operator!"}],
        )
    ]


def test_json_object_with_data_list_and_jsonl_errors(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"data": [{"text": "a b"}]}))
    assert load_examples(str(tmp_path), {})[0].completion == "a b"
    (tmp_path / "y.jsonl").write_text('{"text": "ok"}\n{broken\n')
    with pytest.raises(DatasetError, match=r"y\.jsonl:2"):
        load_examples(str(tmp_path), {})


def test_empty_or_missing_data_is_an_error(tmp_path):
    with pytest.raises(DatasetError, match="no dataset files"):
        load_examples(str(tmp_path), {})
    (tmp_path / "e.jsonl").write_text("")
    with pytest.raises(DatasetError, match="no rows"):
        load_examples(str(tmp_path), {})


def test_row_shapes():
    msgs = [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"},
        {"role": "assistant", "content": "a2"},
    ]
    ex = row_to_example({"messages": msgs}, "r")
    assert ex.prompt == msgs[:3] and ex.completion == msgs[3:]
    conv = row_to_example({"prompt": msgs[:1], "completion": msgs[1:2]}, "r")
    assert conv.prompt == msgs[:1] and conv.completion == msgs[1:2]
    alpaca = row_to_example({"instruction": "Sum", "input": "1 2", "output": "3"}, "r")
    assert alpaca.prompt[0]["content"] == "Sum\n\n1 2" and alpaca.completion[0]["content"] == "3"
    assert row_to_example({"body": "t"}, "r", text_column="body").completion == "t"
    with pytest.raises(DatasetError, match="no assistant turn"):
        row_to_example({"messages": msgs[:1]}, "r")
    with pytest.raises(DatasetError, match="no usable columns"):
        row_to_example({"question": "x"}, "file.csv row 3")


def test_selection_is_seeded_and_honours_the_split():
    examples = [Example("", str(i)) for i in range(10)]
    a = select_for_training(examples, {"shuffle_dataset": True, "shuffle_seed": 7, "train_test_split": 0.8})
    b = select_for_training(examples, {"shuffle_dataset": True, "shuffle_seed": 7, "train_test_split": 0.8})
    assert a == b and len(a) == 8 and a != examples[:8]
    assert select_for_training(examples, {"shuffle_dataset": False, "train_test_split": 1}) == examples


def test_chat_template_rendering_masks_the_prompt(tokenizer):
    ex = row_to_example(tiny.chat_rows(1)[0], "r")
    prompt, completion = render(ex, tokenizer)
    assert prompt.endswith("<|assistant|>\n") and "<|user|>" in prompt and "<|system|>" in prompt
    assert completion == tiny.SENTENCES[0] + "<|end|>\n"
    f = features(ex, tokenizer, max_length=512)
    n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert f["labels"][:n_prompt] == [IGNORE] * n_prompt
    assert f["labels"][n_prompt:] == f["input_ids"][n_prompt:] and len(f["labels"]) > n_prompt
    assert tokenizer.decode(f["input_ids"]).startswith("<s><|system|>")


def test_plain_text_gets_bos_and_eos_and_is_fully_trained(tokenizer):
    f = features(Example("", "Hello operator!"), tokenizer, max_length=512)
    assert f["input_ids"][0] == tokenizer.bos_token_id and f["input_ids"][-1] == tokenizer.eos_token_id
    assert f["labels"] == f["input_ids"]


def test_truncation_that_leaves_nothing_to_learn_drops_the_example(tokenizer):
    ex = row_to_example(tiny.chat_rows(1)[0], "r")
    prompt, _ = render(ex, tokenizer)
    n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert features(ex, tokenizer, max_length=n_prompt) is None
    kept = features(ex, tokenizer, max_length=n_prompt + 2)
    assert len(kept["input_ids"]) == n_prompt + 2 and kept["labels"][-2:] != [IGNORE, IGNORE]


def test_padding():
    out = pad_batch(
        [
            {"input_ids": [5, 6, 7], "labels": [IGNORE, 6, 7], "attention_mask": [1, 1, 1]},
            {"input_ids": [8], "labels": [8], "attention_mask": [1]},
        ],
        pad_id=0,
        multiple_of=4,
    )
    assert out["input_ids"] == [[5, 6, 7, 0], [8, 0, 0, 0]]
    assert out["labels"] == [[IGNORE, 6, 7, IGNORE], [8, IGNORE, IGNORE, IGNORE]]
    assert out["attention_mask"] == [[1, 1, 1, 0], [1, 0, 0, 0]]


def test_system_turn_is_folded_for_templates_without_a_system_role(tokenizer):
    import copy

    strict = copy.deepcopy(tokenizer)
    strict.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
        "{% endif %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    )
    ex = row_to_example(tiny.chat_rows(1)[0], "r")
    prompt, completion = render(ex, strict)
    assert prompt == f"<|user|>\nBe brief.\n\nRepeat: {tiny.SENTENCES[0]}<|end|>\n<|assistant|>\n"
    assert completion == tiny.SENTENCES[0] + "<|end|>\n"


def test_a_template_without_a_system_role_gets_the_system_turn_folded_into_the_user_turn(tokenizer):
    """Gemma-style templates raise on a system turn (TemplateError from raise_exception); render folds it."""
    no_system = (
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
        + tiny.CHAT_TEMPLATE
    )
    strict = copy.copy(tokenizer)
    strict.chat_template = no_system
    example = Example(
        prompt=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi"}],
        completion=[{"role": "assistant", "content": "Hello operator!"}],
    )
    prompt, completion = render(example, strict)
    assert "<|system|>" not in prompt and "<|user|>\nBe brief.\n\nSay hi<|end|>" in prompt
    assert completion.startswith("Hello operator!")
