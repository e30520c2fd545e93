"""Temperature scaling and ECE (pure), and calibration.json beside a model."""
from __future__ import annotations

import json

import numpy as np
import pytest

from carevl.judge.calibration import (
    CALIBRATION_FILE,
    Calibration,
    expected_calibration_error,
    fit_temperature,
    load_calibration,
    negative_log_likelihood,
    reliability_bins,
    save_calibration,
)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _calibrated_sample(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """True logits z and labels drawn with P(label = 1) = sigmoid(z): sigmoid(z) is calibrated."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, n)
    labels = (rng.random(n) < _sigmoid(z)).astype(int)
    return z, labels


def test_fit_temperature_recovers_a_known_temperature_from_over_confident_probabilities():
    z, labels = _calibrated_sample(40_000, seed=1)
    over_confident = _sigmoid(3.0 * z)          # logits scaled up 3x: the right temperature is 3
    temperature = fit_temperature(over_confident, labels)
    assert temperature == pytest.approx(3.0, rel=0.05)
    under_confident = _sigmoid(0.5 * z)
    assert fit_temperature(under_confident, labels) == pytest.approx(0.5, rel=0.05)


def test_temperature_scaling_lowers_ece_and_nll_and_keeps_every_verdict():
    z, labels = _calibrated_sample(20_000, seed=2)
    p = _sigmoid(4.0 * z)
    calibration = Calibration(fit_temperature(p, labels))
    fixed = np.array(calibration.apply_many(p))
    before, after = expected_calibration_error(p, labels), expected_calibration_error(fixed, labels)
    assert before > 0.1 and after < 0.02
    assert negative_log_likelihood(fixed, labels) < negative_log_likelihood(p, labels)
    assert np.array_equal(fixed > 0.5, p > 0.5)


def test_ece_of_a_perfectly_calibrated_sample_is_near_zero():
    z, labels = _calibrated_sample(50_000, seed=3)
    assert expected_calibration_error(_sigmoid(z), labels) < 0.01


def test_ece_by_hand():
    # Bin [0.8, 0.9): p 0.8 twice, one label 1 -> |0.8 - 0.5| = 0.3 with weight 2/4;
    # bin [0.2, 0.3): p 0.2 twice, both labels 0 -> |0.2 - 0| = 0.2 with weight 2/4.
    p, labels = [0.8, 0.8, 0.2, 0.2], [1, 0, 0, 0]
    assert expected_calibration_error(p, labels) == pytest.approx(0.25)
    bins = reliability_bins(p, labels)
    assert [(b["count"], b["mean_p"], b["frequency"]) for b in bins] == [(2, 0.2, 0.0), (2, 0.8, 0.5)]
    assert reliability_bins([1.0], [1])[0]["high"] == 1.0   # p = 1 falls in the last bin


def test_calibration_apply_by_hand_and_identity():
    assert Calibration(2.0).apply(_sigmoid(2.0)) == pytest.approx(_sigmoid(1.0))
    assert Calibration().apply(0.93) == 0.93
    assert Calibration().apply_many([0.1, 1.0]) == [0.1, 1.0]
    assert 0.5 < Calibration(0.5).apply(1.0) <= 1.0          # p = 1 is clipped, not inf/nan
    with pytest.raises(ValueError):
        Calibration(0.0)


def test_fit_temperature_edge_cases():
    assert fit_temperature([0.5, 0.5], [1, 0]) == 1.0
    # Verdicts always wrong: the fit flattens them towards 0.5 rather than flip them (T stays > 0).
    assert fit_temperature([0.9, 0.1, 0.8, 0.3], [0, 1, 0, 1]) >= 100
    with pytest.raises(ValueError):
        fit_temperature([0.5], [2])
    with pytest.raises(ValueError):
        fit_temperature([0.5, 0.6], [1])
    with pytest.raises(ValueError):
        fit_temperature([], [])


def test_save_and_load_beside_the_model(tmp_path):
    assert load_calibration(None) == Calibration()
    assert load_calibration(tmp_path).is_identity                     # a folder without the file
    assert load_calibration("tiny:judge").is_identity                 # not a folder
    path = save_calibration(tmp_path, Calibration(2.5), {"ece_before": 0.2, "ece_after": 0.01, "pairs": 100})
    assert path == tmp_path / CALIBRATION_FILE
    assert json.loads(path.read_text())["ece_before"] == 0.2
    assert load_calibration(tmp_path) == Calibration(2.5)
    assert load_calibration(str(tmp_path)).temperature == 2.5
    path.write_text('{"temperature": -1}')
    with pytest.raises(ValueError):
        load_calibration(tmp_path)
    with pytest.raises(FileNotFoundError):
        save_calibration(tmp_path / "missing", Calibration(), {})
