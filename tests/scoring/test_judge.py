"""ScoreJudge on the tiny LLaVA judge (vlm_micro) with no Ray: one result row per record, the
numbers the judge gives when called directly, failures kept to the row or candidate they belong to."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from carevl.config import InputLimits
from carevl.data.images import encode_png
from carevl.judge.model import JudgeModel
from carevl.judge.rules import group_rewards, reward_comparisons
from carevl.scoring.judge import ScoreJudge
from carevl.scoring.rows import RESULT_SCHEMA, ROW_SCHEMA, normalize_row

LIMITS = InputLimits()


@pytest.fixture(scope="module")
def scorer(model_cache) -> ScoreJudge:
    return ScoreJudge(_spec(), str(model_cache), "bradley_terry")


def _spec():
    from carevl.config import ModelSpec

    return ModelSpec(path="tiny:vlm_micro", kind="vlm", max_length=512, resources={"batch_size": 8})


def _records(rows, method="bradley_terry") -> pa.Table:
    return pa.Table.from_pylist([normalize_row(r, "u0", i, None, LIMITS, method) for i, r in enumerate(rows)],
                                schema=ROW_SCHEMA)


def _png(colour) -> bytes:
    return encode_png(Image.new("RGB", (24, 24), colour))


def test_pairs_and_groups_get_the_judges_own_numbers(scorer):
    red = _png((200, 30, 30))
    rows = [
        {"id": "p", "question": "What colour is it?", "response_a": "red", "response_b": "blue", "image": red},
        {"id": "g", "question": "What colour is it?", "candidates": ["red", "blue", "a green square"],
         "image": red},
        {"id": "bad", "question": "q"},                                   # quarantined before the judge
    ]
    out = scorer(_records(rows))
    assert out.schema == RESULT_SCHEMA and out.num_rows == 3
    pair, group, bad = out.to_pylist()
    assert [pair["id"], group["id"], bad["id"]] == ["p", "g", "bad"]
    assert pair["reason"] is None and group["reason"] is None and "needs 'response_a'" in bad["reason"]

    judge = scorer.judge
    image = judge.resolve_image(red)
    direct, _ = judge.verdict({"question": ["What colour is it?"] * 2, "image": [image, image],
                               "response_a": ["red", "blue"], "response_b": ["blue", "red"]})
    assert pair["p_a_ab"] == pytest.approx(direct[0], abs=1e-6)
    assert pair["p_a_ba"] == pytest.approx(1 - direct[1], abs=1e-6)
    assert pair["p_a"] == pytest.approx((pair["p_a_ab"] + pair["p_a_ba"]) / 2)

    comparisons = reward_comparisons(3, "bradley_terry")
    answers = ["red", "blue", "a green square"]
    p, _ = judge.verdict({"question": ["What colour is it?"] * 6, "image": [image] * 6,
                          "response_a": [answers[i] for i, _ in comparisons],
                          "response_b": [answers[j] for _, j in comparisons]})
    assert group["rewards"] == pytest.approx(group_rewards(3, "bradley_terry", comparisons, list(p)), abs=1e-5)
    assert [(j["first"], j["second"]) for j in group["judgements"]] == comparisons
    assert group["k"] == 3 and sorted(group["ranking"]) == [0, 1, 2]


def test_a_bad_image_fails_its_row_and_a_too_long_candidate_only_itself(scorer):
    rows = [
        {"id": "img", "question": "q", "response_a": "a", "response_b": "b", "image": "data:image/png;base64,AAAA"},
        {"id": "long", "question": "Which is right?", "candidates": ["yes", "no", "word " * 2000]},
        {"id": "fine", "question": "Which is right?", "response_a": "yes", "response_b": "no"},
    ]
    img, long, fine = scorer(_records(rows)).to_pylist()
    assert img["reason"] == "image_undecodable" and '"question": "q"' in img["row_json"]
    assert long["reason"] is None and long["rewards"][2] is None and None not in long["rewards"][:2]
    assert long["candidate_status"] == ["ok", "ok", "prompt_too_long"]
    assert fine["reason"] is None and 0 < fine["p_a"] < 1


def test_calibration_in_the_judge_folder_reaches_the_scores(model_cache, tmp_path):
    import shutil

    from carevl.judge.calibration import Calibration, save_calibration

    folder = tmp_path / "judge"
    shutil.copytree(model_cache / "vlm_micro", folder)
    spec = _spec().model_copy(update={"path": str(folder)})
    rows = [{"question": "Which is right?", "response_a": "yes", "response_b": "no"}]
    raw = ScoreJudge(spec, str(model_cache), "copeland")(_records(rows)).to_pylist()[0]
    save_calibration(folder, Calibration(4.0), {})
    scaled = ScoreJudge(spec, str(model_cache), "copeland")(_records(rows)).to_pylist()[0]
    assert scaled["p_a_ab"] == pytest.approx(Calibration(4.0).apply(raw["p_a_ab"]), abs=1e-6)
    assert abs(scaled["p_a_ab"] - 0.5) < abs(raw["p_a_ab"] - 0.5)


def test_an_exception_inside_the_judge_is_kept_to_one_comparison(scorer, monkeypatch):
    real = JudgeModel.__call__

    def flaky(self, batch):
        if any("boom" in a for a in batch["response_a"]):
            raise RuntimeError("boom")
        return real(self, batch)

    monkeypatch.setattr(JudgeModel, "__call__", flaky)
    rows = [{"id": "x", "question": "q", "response_a": "boom", "response_b": "fine"},
            {"id": "y", "question": "q", "response_a": "yes", "response_b": "no"}]
    x, y = scorer(_records(rows)).to_pylist()
    assert x["reason"] == "judge_exception" and y["reason"] is None and np.isfinite(y["p_a"])
