"""OpenRLHF's remote reward-model protocol, read the way OpenRLHF writes it (OpenRLHF itself does not
install here: its payload and the keys it reads are reproduced from its single-turn executor)."""
from __future__ import annotations

import json

import pytest

from carevl.serving.openrlhf import (
    OpenRLHFRequest,
    OpenRLHFResult,
    group_samples,
    parse_label,
    response_of,
    samples_of,
)
from carevl.serving.schemas import FieldLimitError

PROMPT = "<|im_start|>user\nWhat colour is it?<|im_end|>\n<|im_start|>assistant\n"


def test_the_payload_openrlhf_posts_is_read_and_split():
    # OpenRLHF: query = decode(prompt tokens + response tokens, skip_special_tokens=False).
    payload = {"query": [PROMPT + "Red.<|im_end|>", PROMPT + "Blue.<|endoftext|>\n"], "prompts": [PROMPT] * 2,
               "labels": [json.dumps({"question": "What colour is it?", "reference": "Red."})] * 2}
    samples = samples_of(OpenRLHFRequest.model_validate(payload))
    assert [s.response for s in samples] == ["Red.", "Blue."]
    assert {(s.question, s.reference, s.question_field) for s in samples} == {
        ("What colour is it?", "Red.", "labels.0.question"), ("What colour is it?", "Red.", "labels.1.question")}
    assert group_samples(samples) == [[0, 1]]


def test_the_answer_has_the_keys_openrlhf_reads():
    answer = OpenRLHFResult(rewards=[0.7, 0.2], scores=[0.7, 0.2]).model_dump()
    # OpenRLHF reads `rewards`, `scores` (falling back to `rewards`) and `extra_logs`, one value per query.
    assert set(answer) == {"rewards", "scores", "extra_logs"} and answer["scores"] == answer["rewards"]


@pytest.mark.parametrize("label,expected", [
    (None, {}), ("", {}), ("the answer", {"reference": "the answer"}),
    ('{"reference": "r", "image": "data:,x"}', {"reference": "r", "image": "data:,x"}),
    ({"question": "q"}, {"question": "q"}),
])
def test_labels_are_a_reference_or_an_object(label, expected):
    assert parse_label(label, 0) == expected


def test_unreadable_queries_name_their_field():
    with pytest.raises(FieldLimitError) as err:
        response_of("something else", PROMPT, 3)
    assert err.value.field == "query.3"
    with pytest.raises(FieldLimitError) as err:
        parse_label({"question": 5}, 2)
    assert err.value.field == "labels.2.question"
    with pytest.raises(FieldLimitError) as err:
        samples_of(OpenRLHFRequest(query=["a"], prompts=["a"], labels=["x", "y"]))
    assert err.value.field == "labels"
