"""Refinement end to end on local Ray with tiny models, its resume, and the rubric scorer for real."""
from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from carevl.config import load_config
from carevl.ledger import StaleRunError
from carevl.models.loading import resolve_model_path
from carevl.refine.critiques import CritiqueScorer
from carevl.refine.negatives import NO_CORRECT, NO_REJECTED, NO_SCORED_CORRECT
from carevl.refine.pipeline import apply_strategy, dpo_rows, run_refine
from carevl.models.specs import judge_spec
from carevl.training.synthetic_pairs import write_synthetic_pairs

MICRO = ["models.judge.path=tiny:vlm_micro", "refine.num_samples=2", "refine.max_new_tokens=12",
         "refine.unit_rows=2", "models.scorer.generation.max_new_tokens=6"]
KNOWN_SKIPS = {NO_CORRECT, NO_SCORED_CORRECT, NO_REJECTED, "no_label"}


def _read(folder):
    return pq.read_table(folder).to_pylist()


@pytest.mark.ray
@pytest.mark.slow
def test_refine_end_to_end_and_resume(ray_local, tmp_path):
    counts = write_synthetic_pairs(str(tmp_path / "run"), 6, seed=1)
    config = load_config(overrides=MICRO)
    critic = resolve_model_path(judge_spec(config), config.paths.model_cache_dir())[0]
    out = tmp_path / "pairs"
    summary = run_refine(config, str(tmp_path / "run" / "low"), critic, str(out))

    assert summary["input_pairs"] == counts["low"] == summary["pairs"]
    assert summary["used_pairs"] + sum(summary["skipped"].values()) == counts["low"]
    assert set(summary["skipped"]) <= KNOWN_SKIPS
    critiques = _read(out / "critiques")
    assert sorted(r["pair_id"] for r in critiques) == sorted(r["pair_id"] for r in _read(tmp_path / "run" / "low"))
    assert all(len(r["critiques"]) == 2 == len(r["verdicts"]) == len(r["scores"]) for r in critiques)
    assert all(r["correct"] == [v == r["label"] for v in r["verdicts"]] for r in critiques)
    rows = _read(out / "dpo") if any((out / "dpo").iterdir()) else []
    assert len(rows) == summary["dpo_rows"]
    by_pair = {r["pair_id"]: r for r in critiques}
    for row in rows:
        pair = by_pair[row["pair_id"]]
        assert pair["verdicts"][row["chosen_index"]] == row["label"]
        assert row["chosen"] == pair["critiques"][row["chosen_index"]]
    assert json.loads((out / "summary.json").read_text())["pairs"] == counts["low"]

    # A run killed after its first unit: the other units' files and manifests are gone.
    units = sorted(p.stem for p in (out / "_units").glob("*.json"))
    assert len(units) == (counts["low"] + 1) // 2 >= 2
    for unit in units[1:]:
        (out / "_units" / f"{unit}.json").unlink()
        next((out / "critiques").glob(f"{unit}-*.parquet")).unlink()
    last = next((out / "dpo").glob(f"{units[-1]}-*.parquet"))
    last.rename(out / "dpo" / f".{last.name}.tmp-x")  # half-written
    again = run_refine(config, str(tmp_path / "run" / "low"), critic, str(out))
    assert again["pairs"] == counts["low"] and len(_read(out / "critiques")) == counts["low"]
    assert sorted(p.stem for p in (out / "_units").glob("*.json")) == units
    assert not [p for p in (out / "dpo").iterdir() if p.name.startswith(".")]
    kept = {r["pair_id"]: r for r in _read(next((out / "critiques").glob(f"{units[0]}-*.parquet")))}
    assert kept and all(kept[p] == by_pair[p] for p in kept)  # the finished unit was not redone

    # A re-run with another strategy, or with changed input, would mix two runs' units: it is refused.
    other = load_config(overrides=MICRO + ["refine.strategy=all_incorrect"])
    with pytest.raises(StaleRunError, match=r"config\.refine\.strategy: \"best_to_worse\" -> \"all_incorrect\""):
        run_refine(other, str(tmp_path / "run" / "low"), critic, str(out))
    write_synthetic_pairs(str(tmp_path / "run2"), 3, seed=2)
    shutil.copy(next((tmp_path / "run2" / "low").glob("*.parquet")), tmp_path / "run" / "low" / "extra.parquet")
    with pytest.raises(StaleRunError, match=r"input\.pairs\.files: 1 -> 2.*delete .*pairs or choose another"):
        run_refine(config, str(tmp_path / "run" / "low"), critic, str(out))


@pytest.mark.slow
def test_scorer_grades_critiques_and_strategy_builds_rows():
    """The real SmolLM2 scorer through the rubric: every reply is parsed or marked, never guessed."""
    config = load_config()
    scorer = CritiqueScorer(config.models["scorer"], str(config.paths.model_cache_dir()))
    critiques = ["Verdict: A\nExplanation: Answer A counts the two red circles correctly; Answer B says three.",
                 "Verdict: B\nExplanation: B.", "Verdict: A\nExplanation: A is right."]
    batch = pa.table({
        "pair_id": ["p"], "question": ["How many red circles are there?"], "caption": ["two red circles"],
        "response_a": ["There are two red circles."], "response_b": ["There are three red circles."],
        "label": ["A"], "critiques": [critiques], "verdicts": [["A", "B", "A"]], "correct": [[True, False, True]],
        "skip_reason": pa.array([None], pa.string()),
    })
    table = scorer(batch)
    scored = table.to_pylist()[0]
    assert len(scored["scores"]) == 3 and len(scored["score_replies"]) == 3
    # Best-to-Worse never reads an incorrect critique's score, so the scorer is not asked for it.
    assert scored["score_status"][1] == "not_scored" and scored["score_replies"][1] is None
    assert all(status != "not_scored" for status in (scored["score_status"][0], scored["score_status"][2]))
    for score, status in zip(scored["scores"], scored["score_status"]):
        assert (score is not None) == (status == "ok")
        assert score is None or 0 <= score <= 100
    pair = apply_strategy(table, "all_incorrect").to_pylist()[0]
    if pair["skip_reason"] is None:
        assert [r["rejected_index"] for r in dpo_rows(pair, "all_incorrect")] == [1]
    else:
        assert pair["skip_reason"] == NO_SCORED_CORRECT
