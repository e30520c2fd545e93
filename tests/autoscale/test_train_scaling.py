"""SFT through Ray Train on the fake GPU cloud from zero GPU instances, one of them preempted mid-run."""
from __future__ import annotations

import pytest

from carevl.testing.train_scaling import MAX_STEPS, sft_with_preemption

from tests.autoscale.conftest import record

pytestmark = [pytest.mark.autoscale, pytest.mark.ray, pytest.mark.slow]


def test_sft_resumes_after_a_preempted_gpu_instance(cloud, timeline, tmp_path):
    run = sft_with_preemption(cloud, timeline, tmp_path)
    record(timeline, run)
    f, details = run.figures, run.details
    assert f["job"] == "SUCCEEDED", details["log_tail"]
    # The restart was charged to preemption and resumed from the checkpoint registered before it.
    assert f["preemption_failure_log_lines"] >= 1
    assert f["step_at_preemption"] <= f["resumed_from_step"] < MAX_STEPS == f["global_step"]
    assert details["replacement_node"] not in details["worker_nodes"]
    # The judge it saved loads (on CPU: the GPUs were logical) and gives a verdict.
    judged = details["judged"]
    assert judged["device"] == "cpu" and 0.0 <= judged["p_a"] <= 1.0 and judged["winner"] in ("A", "B", "tie")
    assert not cloud.gpu_nodes()
