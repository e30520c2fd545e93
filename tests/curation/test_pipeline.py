"""The curation job end to end on local Ray with tiny real models and synthetic items."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from carevl.config import load_config
from carevl.curation.pairs import distinct_indices
from carevl.curation.pipeline import run_curation
from carevl.curation.votes import confidence_split, count_votes
from carevl.ledger import StaleRunError
from carevl.testing.items import synth_rows, tiny_overrides, write_jsonl

from tests.curation.conftest import good_item

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _read(folder: Path) -> list[dict]:
    rows = []
    for f in sorted(folder.glob("*.parquet")):
        rows += pq.read_table(f).to_pylist()
    return rows


@pytest.fixture(scope="module")
def curated(ray_local, tmp_path_factory):
    """One run over 7 synthetic items (one repeating another's image) plus four bad rows."""
    root = tmp_path_factory.mktemp("curate")
    rows = synth_rows(7)
    rows[6]["image_bytes"] = rows[0]["image_bytes"]            # a repeated image: captioned once
    bad = ["{broken json",
           good_item("bad-question", question=""),
           good_item("bad-image", image_bytes="bm90IGFuIGltYWdl"),
           dict(rows[1])]                                      # duplicate item_id of rows[1]
    items = rows[:3] + bad[:2] + rows[3:] + bad[2:]
    write_jsonl(root / "items.jsonl", items)
    config = load_config(overrides=tiny_overrides(unit_items=3))
    run_dir = root / "run"
    summary = run_curation(config, str(root / "items.jsonl"), str(run_dir))
    return dict(config=config, run_dir=run_dir, rows=rows, items=items, summary=summary, input=root / "items.jsonl")


def test_rows_are_conserved(curated):
    s = curated["summary"]
    assert s["input_rows"] == len(curated["items"]) == 11
    assert s["processed_items"] == 7 and s["quarantined_items"] == 4 and s["rows_conserved"]
    quarantine = _read(curated["run_dir"] / "quarantine")
    assert sorted(r["reason"] for r in quarantine) == sorted(
        ["invalid_json", "empty_question", "image_undecodable", "duplicate_item_id"])
    assert {r["reason"]: r["item_id"] for r in quarantine}["duplicate_item_id"] == curated["rows"][1]["item_id"]
    assert s["quarantine_reasons"] == {"duplicate_item_id": 1, "empty_question": 1, "image_undecodable": 1,
                                       "invalid_json": 1}


def test_every_pair_once_and_the_rule_recomputes(curated):
    cfg, run_dir = curated["config"], curated["run_dir"]
    high, low = _read(run_dir / "high"), _read(run_dir / "low")
    pairs = high + low
    expected = {f"{r['item_id']}:{j['a']}-{j['b']}" for r in curated["rows"] for j in r["judgements"]}
    assert sorted(p["pair_id"] for p in pairs) == sorted(expected)          # none missing, none twice
    assert curated["summary"]["pairs"] == {"total": len(pairs), "high": len(high), "low": len(low)}
    tau = cfg.curation.effective_tau
    for p in pairs:
        assert len(p["expert_scores_a"]) == len(cfg.curation.experts) == len(p["expert_scores_b"])
        votes = count_votes(p["expert_scores_a"], p["expert_scores_b"])
        assert votes == (p["votes_a"], p["votes_b"])
        split = confidence_split(*votes, p["judge_choice"], tau)
        assert (split.confidence, split.low_reason, split.label) == (p["confidence"], p["low_reason"], p["label"])
        assert p["caption"] is not None and p["judge_status"] == "ok"
    assert all(p["confidence"] == "high" for p in high) and all(p["confidence"] == "low" for p in low)


def test_each_unique_response_scored_once_per_expert(curated):
    s = curated["summary"]
    distinct = sum(len(distinct_indices(r["responses"])) for r in curated["rows"])
    assert s["unique_responses"] == distinct
    assert s["expert_forward_rows"] == {e: distinct for e in curated["config"].curation.experts}


def test_each_unique_image_captioned_once(curated):
    captions = curated["summary"]["captions"]
    assert captions == {"generated": 6, "reused": 1}   # 7 items, 6 distinct images


def test_rerun_skips_finished_work(curated):
    summary = run_curation(curated["config"], str(curated["input"]), str(curated["run_dir"]))
    assert summary["run"]["units_run"] == 0 and summary["run"]["units_skipped"] == 4
    assert summary["pairs"] == curated["summary"]["pairs"]
    manifests = list((curated["run_dir"] / "_units").glob("*.json"))
    assert len(manifests) == 4
    assert json.loads((curated["run_dir"] / "summary.json").read_text())["rows_conserved"]


def test_a_changed_input_is_refused(curated, tmp_path):
    other = write_jsonl(tmp_path / "other.jsonl", curated["rows"][:2])
    with pytest.raises(StaleRunError, match=r"input\.items\.uri: .*To start afresh, delete"):
        run_curation(curated["config"], str(other), str(curated["run_dir"]))
    changed = load_config(overrides=tiny_overrides(unit_items=3) + ["curation.tau=4"])
    with pytest.raises(StaleRunError, match=r"config\.tau: 3 -> 4"):
        run_curation(changed, str(curated["input"]), str(curated["run_dir"]))


@pytest.fixture(scope="module")
def generated(ray_local, provider, tmp_path_factory):
    """Items without responses: candidates from the micro VLM (greedy and t=1), verdicts from an
    OpenAI-compatible endpoint (a real local HTTP server)."""
    from carevl.data.synth import SynthSpec, make_item
    import base64

    root = tmp_path_factory.mktemp("generated")
    rows = [make_item(21, i, SynthSpec(with_responses=False)) for i in range(3)]
    for row in rows:
        row["image_bytes"] = base64.b64encode(row["image_bytes"]).decode()
    write_jsonl(root / "items.jsonl", rows)
    # Candidates from the SmolLM2-backed VLM (the micro one's random weights mostly say nothing).
    overrides = tiny_overrides(unit_items=2) + [
        "models.vlm.resources.num_cpus=0.25",
        "models.cand.path=tiny:vlm", "models.cand.kind=vlm", "models.cand.dtype=float32",
        "models.cand.generation.max_new_tokens=12", "models.cand.resources.num_cpus=0.25",
        "curation.candidates=[{model: cand, temperature: 0.0}, {model: cand, temperature: 1.0}]",
        "models.api_judge.path=judge-model", "models.api_judge.kind=vlm", "models.api_judge.backend=openai",
        f"models.api_judge.endpoint={provider.endpoint}",
        "curation.strong_judge.backend=openai", "curation.strong_judge.model=api_judge",
        f"paths.request_cache={root / 'requests'}"]
    config = load_config(overrides=overrides)
    summary = run_curation(config, str(root / "items.jsonl"), str(root / "run"))
    return dict(summary=summary, run_dir=root / "run", rows=rows)


def test_candidates_and_endpoint_judge_end_to_end(generated, provider):
    s, run_dir = generated["summary"], generated["run_dir"]
    assert s["input_rows"] == 3 and s["rows_conserved"]
    assert set(s["quarantine_reasons"]) <= {"too_few_distinct_responses", "empty_response"}
    pairs = _read(run_dir / "high") + _read(run_dir / "low")
    assert s["processed_items"] >= 1
    assert len(pairs) == s["pairs"]["total"] == s["processed_items"]      # two candidates -> one pair each
    for p in pairs:
        assert p["judge_status"] == "ok" and p["judge_choice"] == "A" and p["judge_explanation"].startswith("call")
    assert s["judge_status"] == ({"ok": len(pairs)} if pairs else {})
    assert sum(1 for b in provider.bodies if b["model"] == "judge-model") >= len(pairs)
    assert "candidate:cand" in s["model_ids"] and s["model_ids"]["strong_judge"] == "judge-model [openai]"


def test_captions_from_the_data_need_no_caption_model(ray_local, tmp_path):
    """`curation.caption_backend: column`: the experts read the shipped captions; an item without one is
    quarantined; no caption model is loaded or named in the summary."""
    rows = synth_rows(3, seed=8, captions=True)
    rows[2]["caption"] = None
    write_jsonl(tmp_path / "items.jsonl", rows)
    config = load_config(overrides=tiny_overrides(unit_items=4) + [
        "curation.caption_backend=column", "models.vlm.path=/nonexistent/caption/model"])
    summary = run_curation(config, str(tmp_path / "items.jsonl"), str(tmp_path / "run"))
    assert summary["quarantine_reasons"] == {"caption_missing": 1} and summary["rows_conserved"]
    assert "caption_model" not in summary["model_ids"]
    pairs = _read(tmp_path / "run" / "high") + _read(tmp_path / "run" / "low")
    shipped = {r["item_id"]: r["caption"] for r in rows[:2]}
    assert pairs and all(p["caption"] == shipped[p["item_id"]] for p in pairs)


def test_reading_a_unit_never_fuses_into_a_model_pool(ray_local, tmp_path, capsys):
    """With the caption pool's CPUs equal to the read task's, Ray Data would fuse the two and hand each
    fused task the pool's batch_size in *units*; the read must stay an operator of its own."""
    from carevl.curation import units as U
    from carevl.curation.pipeline import build_dataset
    from carevl.curation.validate import ValidationContext
    from carevl.ledger import WorkUnit

    config = load_config(overrides=tiny_overrides(unit_items=2) + [
        "models.vlm.resources.num_cpus=0.25", "curation.task_num_cpus=0.25"])
    path = write_jsonl(tmp_path / "items.jsonl", synth_rows(6, seed=3))
    files = U.list_input_files(str(path))
    units: list[WorkUnit] = U.plan_units(files, [U.scan_file(f, 2) for f in files], 2)
    ds = build_dataset(config, units, ValidationContext(limits=config.curation.limits), str(tmp_path / "run"),
                       str(tmp_path / "captions"))
    ds.explain()
    physical = capsys.readouterr().out.split("Physical Plan (Optimized)")[-1]
    assert "TaskPoolMapOperator[MapBatches(read_and_validate)]" in physical
    assert "MapBatches(Captioner)" in physical and "read_and_validate)->" not in physical
