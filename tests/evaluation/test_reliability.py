"""Calibration of p_a on evaluation records (pure): samples, report section, the fit/test split."""
from __future__ import annotations

import math
import random

import pytest

from carevl.evaluation.calibrate import fit_report, in_test_split
from carevl.evaluation.reliability import calibration_report, calibration_samples, debiased_samples


def _record(item_id, label, p_a, p_a_swapped):
    return {"id": item_id, "label": label, "p_a": p_a, "p_a_swapped": p_a_swapped, "run": 0}


def test_samples_take_every_judged_order_of_labelled_items():
    records = [_record("a", "A", 0.9, 0.7), _record("b", "B", 0.4, None), _record("c", "tie", 0.5, 0.5),
               _record("d", "B", None, None)]
    assert calibration_samples(records) == ([0.9, 0.7, 0.4], [1, 1, 0], ["a", "a", "b"])
    assert debiased_samples(records) == ([pytest.approx(0.8)], [1])


def test_report_section_by_hand_and_none_in_explain_mode():
    records = [_record("a", "A", 0.8, 0.8), _record("b", "B", 0.8, 0.8)]
    section = calibration_report(records, bins=10, temperature=2.0)
    # Every p is 0.8 while A is better half the time: ECE |0.8 - 0.5| = 0.3 for both views.
    assert section["temperature"] == 2.0
    assert section["per_order"]["ece"] == pytest.approx(0.3) and section["per_order"]["n"] == 4
    assert section["debiased"]["ece"] == pytest.approx(0.3) and section["debiased"]["n"] == 2
    assert calibration_report([_record("a", "A", None, None)], 10, None) is None


def test_the_test_split_is_fixed_by_id_and_has_the_asked_share():
    ids = [f"item-{i}" for i in range(2000)]
    share = sum(in_test_split(i, 1, 0.3) for i in ids) / len(ids)
    assert 0.26 < share < 0.34
    assert [in_test_split(i, 1, 0.3) for i in ids[:50]] == [in_test_split(i, 1, 0.3) for i in ids[:50]]
    assert [in_test_split(i, 1, 0.3) for i in ids] != [in_test_split(i, 2, 0.3) for i in ids]


def test_fit_report_corrects_an_over_confident_judge_on_pairs_it_did_not_fit():
    rng = random.Random(0)
    records = []
    for i in range(3000):
        z = rng.gauss(0, 1.2)                          # the true log-odds that A is better
        label = "A" if rng.random() < 1 / (1 + math.exp(-z)) else "B"
        p = 1 / (1 + math.exp(-3.0 * z))               # the judge's logits are 3x too large
        records.append(_record(f"it{i}", label, p, p))
    report = fit_report(records, seed=1, fraction=0.5, bins=10)
    assert report["temperature"] == pytest.approx(3.0, rel=0.1)
    assert report["before"]["ece"] > 0.08 and report["after"]["ece"] < 0.03
    assert report["after"]["nll"] < report["before"]["nll"]
    assert report["pairs"]["fit"] + report["pairs"]["test"] == 3000 and report["judgements"]["test"] > 1000
    with pytest.raises(ValueError, match="too few"):
        fit_report(records[:1], seed=1, fraction=0.5, bins=10)
