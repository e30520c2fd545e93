"""Stage 1: every kind of bad input row lands in quarantine with its reason; nothing is dropped."""
from __future__ import annotations

import base64

import pytest

from carevl.config.stages import InputLimits
from carevl.curation.read import read_and_validate
from carevl.curation.units import duplicate_first_rows, plan_units, scan_file
from carevl.curation.validate import ValidationContext

from tests.curation.conftest import good_item, png_bytes

LIMITS = InputLimits(max_image_bytes=4096, max_image_pixels=64 * 64, max_question_chars=200,
                     max_response_chars=100, max_responses=4)

# (row, expected reason); None means the row is clean.
CASES = [
    (good_item("ok-1"), None),
    ("{not json", "invalid_json"),
    ('["a", "list"]', "not_an_object"),
    (good_item(None), "missing_item_id"),
    (good_item(7), "wrong_type:item_id"),
    (good_item("q-int", question=42), "wrong_type:question"),
    (good_item("resp-str", responses="just one string"), "wrong_type:responses"),
    (good_item("models-len", response_models=["m1"]), "wrong_type:response_models"),
    (good_item("judg-type", judgements="A"), "wrong_type:judgements"),
    (good_item("q-empty", question="   "), "empty_question"),
    (good_item("q-long", question="x" * 201), "question_too_long"),
    (good_item("r-long", responses=["short", "y" * 101], response_models=None, judgements=None),
     "response_too_long"),
    (good_item("r-empty", responses=["fine", " "], response_models=None, judgements=None), "empty_response"),
    (good_item("r-many", responses=list("abcde"), response_models=None, judgements=None), "too_many_responses"),
    (good_item("r-same", responses=["same", "same "], response_models=None, judgements=None),
     "too_few_distinct_responses"),
    (good_item("r-none", responses=None, response_models=None, judgements=None), "no_responses"),
    (good_item("img-none", image_bytes=None), "image_missing"),
    (good_item("img-both", image_path="/tmp/x.png"), "image_ambiguous"),
    (good_item("img-path", image_bytes=None, image_path="/definitely/not/here.png"), "image_not_found"),
    (good_item("img-garbage", image_bytes=base64.b64encode(b"not an image at all").decode()), "image_undecodable"),
    (good_item("img-bytes", image_bytes=base64.b64encode(png_bytes() + b"\0" * 5000).decode()),
     "image_too_large_bytes"),
    (good_item("img-pixels", image_bytes=base64.b64encode(png_bytes((128, 128))).decode()),
     "image_too_many_pixels"),
    (good_item("img-b64", image_bytes="%%%not base64%%%"), "bad_base64"),
    (good_item("judg-range", judgements=[{"a": 0, "b": 9, "choice": "A"}]), "bad_judgement_index"),
    (good_item("judg-self", responses=["x", "y", "x"], response_models=None,
               judgements=[{"a": 0, "b": 2, "choice": "A"}]), "bad_judgement_index"),
    (good_item("judg-twice", judgements=[{"a": 0, "b": 1, "choice": "A"}, {"a": 1, "b": 0, "choice": "A"}]),
     "duplicate_judgement"),
    (good_item("dup"), None),
    (good_item("dup", question="a second row with the same id"), "duplicate_item_id"),
    (good_item("ok-2", judgements=None), None),
]


def _run(jsonl_writer, rows, unit_items=7, **ctx_kwargs):
    path = jsonl_writer(rows)
    scan = scan_file(str(path), unit_items)
    units = plan_units([str(path)], [scan], unit_items)
    ctx = ValidationContext(limits=LIMITS, first_row=duplicate_first_rows([scan]), **ctx_kwargs)
    out = []
    for unit in units:
        out += read_and_validate({k: [v] for k, v in unit.to_dict().items()}, ctx=ctx).to_pylist()
    return units, out


def test_every_bad_kind_is_quarantined_with_its_reason(jsonl_writer):
    units, out = _run(jsonl_writer, [row for row, _ in CASES])
    assert len(out) == len(CASES) == sum(u.rows for u in units)     # conservation: one output per input
    assert [r["row_index"] for r in out] == list(range(len(CASES)))
    assert [r["reason"] for r in out] == [reason for _, reason in CASES]
    for r in out:
        if r["reason"] is not None:
            assert r["row_json"], r       # the original row is kept for inspection
    assert '{not json' in out[1]["row_json"]


def test_clean_rows_carry_pairs_and_column_verdicts(jsonl_writer):
    _, out = _run(jsonl_writer, [good_item("ok-1"), good_item("ok-2", judgements=None)])
    first, second = out
    # Judged pairs, A always the earlier response; (2, 1) with verdict B turns into (1, 2) with verdict A.
    assert list(zip(first["pairs_a"], first["pairs_b"])) == [(0, 1), (0, 2), (1, 2)]
    assert first["judge_choices"] == ["A", "A", "A"]
    assert first["judge_statuses"] == ["ok", "ok", "ok"]
    # No judgements: all pairs of distinct responses, verdicts missing.
    assert list(zip(second["pairs_a"], second["pairs_b"])) == [(0, 1), (0, 2), (1, 2)]
    assert second["judge_statuses"] == ["missing"] * 3 and second["judge_choices"] == [None] * 3
    assert first["image_key"] == second["image_key"]   # same picture, same key: captioned once


def test_a_judgement_given_in_b_a_order_swaps_its_explanation_with_its_verdict(jsonl_writer):
    """(2, 1) judged 'Answer A is better' becomes (1, 2) judged B: the explanation must now argue for B."""
    item = good_item("swap", judgements=[
        {"a": 2, "b": 1, "choice": "A", "explanation": "Answer A names the green square; Answer B is wrong."},
        {"a": 0, "b": 2, "choice": "A", "explanation": "Answer A is right."}])
    _, [row] = _run(jsonl_writer, [item])
    assert list(zip(row["pairs_a"], row["pairs_b"])) == [(1, 2), (0, 2)]
    assert row["judge_choices"] == ["B", "A"]
    assert row["judge_explanations"] == ["Answer B names the green square; Answer A is wrong.", "Answer A is right."]


def test_a_full_judgement_text_in_choice_keeps_its_explanation(jsonl_writer):
    item = good_item("full", judgements=[
        {"a": 0, "b": 1, "choice": "Verdict: A\nExplanation: Answer A matches the red square."},
        {"a": 2, "b": 0, "choice": "Verdict: B\nExplanation: Answer B is right, Answer A is not."}])
    _, [row] = _run(jsonl_writer, [item])
    assert row["judge_choices"] == ["A", "A"] and row["judge_statuses"] == ["ok", "ok"]
    assert row["judge_explanations"] == ["Answer A matches the red square.",
                                         "Answer A is right, Answer B is not."]


def test_unparseable_and_missing_verdicts_are_recorded_not_guessed(jsonl_writer):
    item = good_item("v", judgements=[{"a": 0, "b": 1, "choice": "A is better, probably"},
                                      {"a": 0, "b": 2, "choice": None}, {"a": 1, "b": 2, "choice": " b "}])
    _, [row] = _run(jsonl_writer, [item])
    assert row["judge_choices"] == [None, None, "B"]
    assert row["judge_statuses"] == ["unparseable", "missing", "ok"]


def test_column_captions_are_required_and_bounded_when_captions_come_from_the_data(jsonl_writer):
    rows = [good_item("cap-ok", caption="Top row, left: empty, red circle; right: empty, empty."),
            good_item("cap-none"), good_item("cap-blank", caption="  "), good_item("cap-long", caption="x" * 300),
            good_item("cap-type", caption=7)]
    limits = LIMITS.model_copy(update={"max_caption_chars": 200})
    path = jsonl_writer(rows)
    scan = scan_file(str(path), 10)
    [unit] = plan_units([str(path)], [scan], 10)
    ctx = ValidationContext(limits=limits, captions_from_column=True, first_row=duplicate_first_rows([scan]))
    out = read_and_validate({k: [v] for k, v in unit.to_dict().items()}, ctx=ctx).to_pylist()
    assert [r["reason"] for r in out] == [None, "caption_missing", "caption_missing", "caption_too_long",
                                          "wrong_type:caption"]
    assert out[0]["caption"].startswith("Top row")
    # Without the column backend a missing caption is fine (the caption model writes one).
    _, [row] = _run(jsonl_writer, [good_item("cap-free")])
    assert row["reason"] is None


def test_items_without_responses_wait_for_candidates_when_configured(jsonl_writer):
    _, [row] = _run(jsonl_writer, [good_item("c", responses=None, response_models=None, judgements=None)],
                    has_candidates=True)
    assert row["reason"] is None and row["needs_candidates"] and row["responses"] == []


@pytest.mark.parametrize("unit_items", [1, 3, 100])
def test_units_cover_every_row_exactly_once(jsonl_writer, unit_items):
    rows = [row for row, _ in CASES]
    units, out = _run(jsonl_writer, rows, unit_items=unit_items)
    assert [u.rows for u in units] == [min(unit_items, len(rows) - s) for s in range(0, len(rows), unit_items)]
    assert sorted(r["row_index"] for r in out) == list(range(len(rows)))
