"""Curation on the fake GPU cloud: scale from zero GPU instances and back, and a bundle no node type
offers."""
from __future__ import annotations

import pytest

from carevl.testing.scaling_scenarios import curation_from_zero, infeasible_stage, preemption_mid_curation

from tests.autoscale.conftest import check_curation_from_zero, record

pytestmark = [pytest.mark.autoscale, pytest.mark.ray, pytest.mark.slow]


def test_curation_from_zero(cloud, timeline, tmp_path):
    run = curation_from_zero(cloud, timeline, tmp_path)
    record(timeline, run)
    check_curation_from_zero(run, cloud, timeline)


def test_infeasible_bundle_fails_fast(cloud, timeline, tmp_path):
    largest = max(t["resources"].get("GPU", 0) for t in cloud.types().values())
    run = infeasible_stage(cloud, tmp_path, gpus=largest * 2)
    record(timeline, run)
    assert run.figures["job"] == "FAILED"
    assert run.figures["gpu_nodes_launched"] == 0
    logs = run.details["logs"]
    assert "curate: model 'vlm'" in logs and f"{largest * 2:g} GPU(s)" in logs
    assert "fits no node type" in logs and "gpu_8x_h100_80g" in logs


def test_spot_preemption_mid_curation(cloud, timeline, tmp_path):
    run = preemption_mid_curation(cloud, timeline, tmp_path)
    record(timeline, run)
    f, details = run.figures, run.details
    assert f["job"] == "SUCCEEDED", details["logs"]
    assert 0 < f["units_at_fault"] < f["units_total"]          # struck mid-run
    assert (f["rows_lost"], f["rows_duplicated"], f["quarantined"]) == (0, 0, 1)
    # Ray saw a preemption (not a crash) of a caption actor with work left, and a new GPU instance of
    # the same type took the work.
    assert f["caption_restarts_counted_as_preemption"] >= 1
    assert details["replacement_node"] != details["preempted_node"]
    assert details["replacement_type"] == "gpu_1x_l40s"
    assert not cloud.gpu_nodes() and details["leftovers"] == {"actors": [], "placement_groups": []}
