"""Reading gold sources and matching them to curated pairs."""
from __future__ import annotations

import json

import pyarrow as pa
import pytest

from carevl.audit.gold import GoldError, item_pair_gold, match_gold, pair_indices, read_gold
from carevl.data.io import write_table
from carevl.data.synth import SynthSpec, make_item
from carevl.schema import ITEM_SCHEMA, pair_id


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_pair_indices_from_pair_id():
    assert pair_indices(pair_id("it:em", 2, 5), "it:em") == (2, 5)
    assert pair_indices("other:0-1", "it:em") is None
    assert pair_indices("it:em:x-1", "it:em") is None


def test_item_pair_gold_by_index_then_by_text():
    responses, scores = ["red", " blue ", "green"], [1.0, 0.0, 1.0]
    assert item_pair_gold(responses, scores, "i:0-1", "i", "red", "blue") == "A"
    assert item_pair_gold(responses, scores, "i:0-2", "i", "red", "green") == "tie"
    # The pair_id's indices point elsewhere (another item layout): the texts decide.
    assert item_pair_gold(responses, scores, "i:0-1", "i", "blue", "red") == "B"
    assert item_pair_gold(responses, scores, "i:7-9", "i", "green", "blue") == "A"
    assert item_pair_gold(responses, scores, "i:0-1", "i", "red", "purple") is None


def test_scores_gold_from_parquet_items(tmp_path):
    items = [make_item(5, i, SynthSpec(judge_accuracy=0.8)) for i in range(3)]
    path = write_table(pa.Table.from_pylist(items, schema=ITEM_SCHEMA), str(tmp_path / "items.parquet"))
    gold = read_gold(path)
    assert gold.kind == "scores" and gold.rows == 3 and set(gold.items) == {i["item_id"] for i in items}
    item = items[0]
    a, b = 0, 1
    labels = match_gold(gold, [item["item_id"]], [pair_id(item["item_id"], a, b)],
                        [item["responses"][a]], [item["responses"][b]])
    sa, sb = item["gold_scores"][a], item["gold_scores"][b]
    assert labels == ["tie" if sa == sb else ("A" if sa > sb else "B")]


def test_repeated_item_id_keeps_the_first_row(tmp_path):
    rows = [{"item_id": "x", "responses": ["a", "b"], "gold_scores": [1.0, 0.0]},
            {"item_id": "x", "responses": ["a", "b"], "gold_scores": [0.0, 1.0]}]
    gold = read_gold(_jsonl(tmp_path / "g.jsonl", rows))
    assert match_gold(gold, ["x"], ["x:0-1"], ["a"], ["b"]) == ["A"]


def test_label_gold_matches_either_order(tmp_path):
    rows = [{"id": "q1", "response_a": "It is red.", "response_b": "It is blue.", "label": "A"},
            {"item_id": "q2", "response_a": "Two.", "response_b": "Three.", "label": "tie"},
            {"id": "q3", "response_a": "Yes.", "response_b": "No.", "label": " b "}]
    gold = read_gold(_jsonl(tmp_path / "pairs.jsonl", rows))
    assert gold.kind == "labels" and gold.rows == 3
    labels = match_gold(gold, ["q1", "q1", "q2", "q3", "q4"], ["q1:0-1", "q1:1-0", "q2:0-1", "q3:0-1", "q4:0-1"],
                        ["It is red.", " It is blue.", "Three.", "No.", "x"],
                        ["It is blue.", "It is red.", "Two.", "Yes.", "y"])
    assert labels == ["A", "B", "tie", "A", None]


@pytest.mark.parametrize("rows,message", [
    ([{"item_id": "x", "question": "q"}], "needs `gold_scores`"),
    ([{"id": "x", "response_a": "a", "response_b": "b", "label": "maybe"}], "label must be one of"),
    ([{"id": "x", "response_a": "a", "response_b": "b", "label": "A"},
      {"id": "x", "response_a": "b", "response_b": "a", "label": "A"}], "labelled twice"),
    ([{"item_id": "x", "responses": ["a", "b"], "gold_scores": [1.0]}], "1 gold scores for 2"),
    ([{"item_id": "x", "responses": ["a"], "gold_scores": [1.0]},
      {"id": "y", "response_a": "a", "response_b": "b", "label": "A"}], "mixes"),
])
def test_bad_gold_is_a_clear_error(tmp_path, rows, message):
    with pytest.raises(GoldError, match=message):
        read_gold(_jsonl(tmp_path / "bad.jsonl", rows))


def test_gold_matching_nothing_is_an_error(tmp_path):
    gold = read_gold(_jsonl(tmp_path / "g.jsonl", [{"item_id": "other", "responses": ["a", "b"],
                                                    "gold_scores": [1.0, 0.0]}]))
    with pytest.raises(GoldError, match="labels none of the 2 curated pairs"):
        match_gold(gold, ["x", "y"], ["x:0-1", "y:0-1"], ["a", "a"], ["b", "b"])
    assert match_gold(gold, [], [], [], []) == []     # nothing curated: nothing to match


def test_missing_gold_source_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_gold(str(tmp_path / "nowhere.jsonl"))
