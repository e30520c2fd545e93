"""Benchmark loaders: VL-RewardBench on the real annotation file, generic pairwise JSONL/Parquet."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from carevl.evaluation.loaders import (
    image_as_data_url,
    load_pairwise,
    load_vl_rewardbench,
    strip_image_placeholder,
    vl_rewardbench_category,
)

VLRB = Path(__file__).resolve().parents[3] / "shared" / "data" / "vl_rewardbench" / "data.jsonl"
needs_vlrb = pytest.mark.skipif(not VLRB.is_file(), reason=f"VL-RewardBench annotations not found at {VLRB}")


@needs_vlrb
def test_vl_rewardbench_real_file_counts():
    loaded = load_vl_rewardbench(VLRB)
    assert len(loaded.items) == 1250
    assert loaded.quarantine == []
    assert not loaded.has_images           # text-only: the images are not distributed with the file
    assert Counter(it["category"] for it in loaded.items) == {
        "general": 183, "hallucination": 749, "reasoning": 318}
    # The file lists the better answer first in 1,245 of 1,250 rows (human_ranking: 0 = better).
    assert Counter(it["label"] for it in loaded.items) == {"A": 1245, "B": 5}
    # Some ids name two different pairs; each becomes its own item with a unique id.
    assert len({it["id"] for it in loaded.items}) == 1250
    # The source datasets' "<image>" markers are dropped from the questions (the prompt places the image).
    assert not any("<image>" in it["question"] for it in loaded.items)


def test_strip_image_placeholder():
    assert strip_image_placeholder("<image>\nHow many cats?") == "How many cats?"
    assert strip_image_placeholder("What is shown?\n<image>") == "What is shown?"
    assert strip_image_placeholder("Options: <image 2> or <image 3>") == "Options: <image 2> or <image 3>"


def test_vl_rewardbench_category_rule():
    assert vl_rewardbench_category("wildvision-battle-1") == "general"
    assert vl_rewardbench_category("LRVInstruction-000000007746") == "general"
    assert vl_rewardbench_category("hallucination_pair-12788") == "hallucination"
    assert vl_rewardbench_category("RLAIF-V-14") == "hallucination"
    assert vl_rewardbench_category("RLHF-V-5624") == "hallucination"
    assert vl_rewardbench_category("mathverse_1679") == "reasoning"
    assert vl_rewardbench_category("mmmu_pro_test_Literature_60") == "reasoning"


def _vlrb_row(item_id, ranking=(1, 0), **extra):
    row = {"id": item_id, "image_path": f"images/x/{item_id}.png", "query": "q?",
           "response": ["first", "second"], "human_ranking": list(ranking)}
    row.update(extra)
    return row


def test_vl_rewardbench_images_folder_and_quarantine(tmp_path):
    (tmp_path / "imgs" / "images" / "x").mkdir(parents=True)
    (tmp_path / "imgs" / "images" / "x" / "RLHF-V-1.png").write_bytes(b"\x89PNG fake")
    data = tmp_path / "data.jsonl"
    rows = [_vlrb_row("RLHF-V-1"), _vlrb_row("mmmu_2"), _vlrb_row("RLHF-V-1"),
            {"id": "bad", "query": "q", "response": ["only one"], "human_ranking": [0]}]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    loaded = load_vl_rewardbench(data, images_dir=tmp_path / "imgs")
    assert [it["id"] for it in loaded.items] == ["RLHF-V-1", "RLHF-V-1#1"]
    assert loaded.items[0]["label"] == "B"
    assert loaded.items[0]["image_path"].endswith("RLHF-V-1.png")
    reasons = {q["id"]: q["reason"] for q in loaded.quarantine}
    assert "image not found" in reasons["mmmu_2"]
    assert reasons["bad"].startswith("field 'response'")
    assert len(loaded.quarantine) == 2
    assert image_as_data_url(loaded.items[0]).startswith("data:image/png;base64,")


def test_vl_rewardbench_parquet_with_embedded_images(tmp_path):
    rows = [_vlrb_row("wildvision-1", (0, 1), image={"bytes": b"\xff\xd8jpeg", "path": "a.jpg"})]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "vlrb.parquet")
    loaded = load_vl_rewardbench(tmp_path / "vlrb.parquet")
    assert loaded.has_images
    assert loaded.items[0]["image_bytes"] == b"\xff\xd8jpeg"
    assert loaded.items[0]["label"] == "A"


def test_pairwise_jsonl_and_parquet(tmp_path):
    rows = [
        {"id": "1", "image": "pics/1.png", "question": "q", "response_a": "a", "response_b": "b",
         "label": "tie", "category": "COCO"},
        {"id": "2", "image": None, "question": "q", "response_a": "a", "response_b": "b", "label": "b"},
        {"id": "3", "question": "q", "response_a": "a", "response_b": "b", "label": "C"},
        {"id": "4", "question": "q", "response_a": None, "response_b": "b", "label": "A"},
        {"id": "2", "question": "q", "response_a": "a", "response_b": "b", "label": "A"},
    ]
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "pairs.parquet")
    for path in (jsonl, tmp_path / "pairs.parquet"):
        loaded = load_pairwise(path)
        assert [(it["id"], it["label"], it["category"]) for it in loaded.items] == [
            ("1", "tie", "COCO"), ("2", "B", "all")]
        assert loaded.items[0]["image_path"] == str(tmp_path / "pics" / "1.png")
        reasons = {q["id"]: q["reason"] for q in loaded.quarantine}
        assert "field 'label'" in reasons["3"] and "field 'response_a'" in reasons["4"]
        assert reasons["2"] == "duplicate id"


def test_bad_json_line_is_quarantined_with_its_place(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"id": "1", "question": "q", "response_a": "a", "response_b": "b", "label": "A"}\n{not json\n')
    loaded = load_pairwise(path)
    assert [it["id"] for it in loaded.items] == ["1"]
    assert loaded.quarantine == [{"id": f"<{path}:2>", "reason": "invalid_json"}]


def test_pairwise_folder_of_part_files(tmp_path):
    from carevl.data.synth import write_eval_pairs

    write_eval_pairs(str(tmp_path / "eval"), 5, seed=3, shard_size=2)
    loaded = load_pairwise(tmp_path / "eval")
    assert len(loaded.items) == 5 and loaded.quarantine == []
    assert all(it["image_path"].startswith("data:image/") for it in loaded.items)
    assert {it["label"] for it in loaded.items} <= {"A", "B", "tie"}
