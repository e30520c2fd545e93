"""A deliberately over-confident real judge (the tiny LLaVA with its final norm, hence every logit,
scaled 8x) is calibrated on synthetic held-out pairs with known labels: the fitted temperature goes in
its folder, and an evaluation of the same judge afterwards shows the lower ECE (JudgeModel applies it)."""
from __future__ import annotations

import json
import shutil

import pytest
from safetensors.torch import load_file, save_file

from carevl.config import load_config
from carevl.evaluation.calibrate import CalibrateRequest, calibrate
from carevl.evaluation.runner import EvalRequest, evaluate
from carevl.judge.calibration import CALIBRATION_FILE

pytestmark = [pytest.mark.ray, pytest.mark.slow]
SCALE = 8.0
OVERRIDES = ["score.calibration.pairs=60", "score.calibration.seed=3", "evaluation.synthetic_items=60",
             "evaluation.seed=3", "evaluation.mode=verdict", "evaluation.k=1"]


@pytest.fixture
def over_confident_judge(model_cache, tmp_path):
    folder = tmp_path / "judge"
    shutil.copytree(model_cache / "vlm_micro", folder)
    weights = load_file(folder / "model.safetensors")
    weights["language_model.model.norm.weight"] = weights["language_model.model.norm.weight"] * SCALE
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def test_an_over_confident_judge_is_corrected(ray_local, over_confident_judge, tmp_path):
    config = load_config(overrides=OVERRIDES)
    report = calibrate(config, CalibrateRequest(judge=str(over_confident_judge), output=str(tmp_path / "cal")))
    assert report["temperature"] > 2.0                      # it was told to soften the judge
    assert report["after"]["ece"] < report["before"]["ece"] - 0.1
    assert report["after"]["nll"] < report["before"]["nll"]
    stored = json.loads((over_confident_judge / CALIBRATION_FILE).read_text())
    assert stored["temperature"] == pytest.approx(report["temperature"])
    assert (tmp_path / "cal" / "reliability_fit.png").stat().st_size > 0

    # The judge as it is loaded from now on: an evaluation on the same held-out pairs applies the file.
    raw = json.loads((tmp_path / "cal" / "report.json").read_text())["calibration"]
    after = evaluate(config, EvalRequest(benchmark="synthetic", judge=str(over_confident_judge),
                                         output=str(tmp_path / "eval")))["calibration"]
    assert raw["temperature"] == 1.0 and after["temperature"] == pytest.approx(report["temperature"])
    assert after["per_order"]["n"] == raw["per_order"]["n"]
    assert after["per_order"]["ece"] < raw["per_order"]["ece"] - 0.1
    assert (tmp_path / "eval" / "reliability.png").stat().st_size > 0
    assert "## Calibration" in (tmp_path / "eval" / "report.md").read_text()


def test_a_kit_model_is_not_written_to(tmp_path):
    with pytest.raises(ValueError, match="copy its folder"):
        calibrate(load_config(), CalibrateRequest(judge="tiny:vlm_micro", output=str(tmp_path / "cal")))
