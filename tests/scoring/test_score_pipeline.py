"""The scoring job end to end on local Ray with the tiny judge: one output row per input row, the
judge's own numbers, resume of a finished run, refusal of a changed one."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from carevl.config import load_config
from carevl.judge.model import JudgeModel
from carevl.ledger import StaleRunError
from carevl.scoring.pipeline import ScoreRequest, run_scoring

from tests.scoring.conftest import group_rows, write_parquet

pytestmark = [pytest.mark.ray, pytest.mark.slow]
OVERRIDES = ["score.unit_rows=4", "score.progress_interval_s=1"]


def read_class(run_dir: Path, cls: str) -> list[dict]:
    return [r for f in sorted((run_dir / cls).glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def test_every_row_once_with_the_judges_numbers(ray_local, mixed_input, tmp_path, model_cache):
    path, rows = mixed_input
    config = load_config(overrides=OVERRIDES)
    request = ScoreRequest(input=str(path), judge="tiny:vlm_micro", output=str(tmp_path / "out"))
    summary = run_scoring(config, request)
    out = Path(request.output)
    pairs, groups, quarantine = (read_class(out, c) for c in ("pairs", "groups", "quarantine"))
    assert summary["rows_conserved"] and summary["input_rows"] == len(rows) == 16
    assert (len(pairs), len(groups), len(quarantine)) == (9, 3, 4)
    assert sorted(r["row_index"] for r in pairs + groups + quarantine) == list(range(16))
    reasons = {r["id"]: r["reason"] for r in quarantine}
    assert reasons["bad-image"] == "image_undecodable" and reasons["bad-long"] == "prompt_too_long"
    assert "response_b" in reasons["bad-missing"] and reasons[None] == "invalid_json"
    assert summary["quarantine_reasons"]["image_undecodable"] == 1
    assert summary["judgements"] == 9 * 2 + 3 * 6

    # The job's numbers are the judge's: the first pair, judged here in both orders.
    first = next(r for r in pairs if r["row_index"] == 0)
    judge = JudgeModel(config.models["judge"].model_copy(update={"path": "tiny:vlm_micro"}), model_cache)
    p, _ = judge.verdict({"question": [rows[0]["question"]] * 2, "image": [rows[0]["image"]] * 2,
                          "response_a": [rows[0]["response_a"], rows[0]["response_b"]],
                          "response_b": [rows[0]["response_b"], rows[0]["response_a"]]})
    assert first["p_a_ab"] == pytest.approx(p[0], abs=1e-5) and first["p_a_ba"] == pytest.approx(1 - p[1], abs=1e-5)
    assert first["label"] == rows[0]["label"] and first["id"] == rows[0]["id"]
    assert all(len(g["rewards"]) == 3 and None not in g["rewards"] for g in groups)

    # A second run of the same command has nothing to do and changes nothing.
    before = sorted(p.name for p in out.rglob("*.parquet"))
    again = run_scoring(config, request)
    assert again["run"]["units_run"] == 0 and again["run"]["units_skipped"] == summary["run"]["units_total"]
    assert sorted(p.name for p in out.rglob("*.parquet")) == before

    # Another method would mix two kinds of reward in one folder: refused, naming the change.
    with pytest.raises(StaleRunError, match="method"):
        run_scoring(load_config(overrides=OVERRIDES + ["score.method=copeland"]), request)


def test_parquet_groups_against_a_reference(ray_local, tmp_path):
    groups = group_rows(4, k=2)
    del groups[3]["reference"]
    path = write_parquet(tmp_path / "groups" / "part-0.parquet", groups)
    config = load_config(overrides=OVERRIDES + ["score.method=reference"])
    summary = run_scoring(config, ScoreRequest(str(path.parent), "tiny:vlm_micro", str(tmp_path / "out")))
    scored = read_class(tmp_path / "out", "groups")
    assert summary["groups"] == 3 and summary["quarantined"] == 1 and summary["judgements"] == 3 * 4
    assert all(g["method"] == "reference" and len(g["judgements"]) == 4 for g in scored)
    for g in scored:  # reward = P(candidate beats the reference), both orders averaged
        by_pair = {(j["first"], j["second"]): j["p_first"] for j in g["judgements"]}
        assert g["rewards"][0] == pytest.approx((by_pair[(0, 2)] + 1 - by_pair[(2, 0)]) / 2)
    quarantined = read_class(tmp_path / "out", "quarantine")
    assert "'reference' is required" in quarantined[0]["reason"]
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["method"] == "reference"
