"""The judge service on the fake GPU cloud under a bounded load ramp, with a spot preemption at the
peak: replicas and GPU instances follow the load up and back down, and no request fails."""
from __future__ import annotations

import pytest

from carevl.testing.serve_scaling import DEPLOYMENT, Ramp, serve_under_ramp

from tests.autoscale.conftest import record

pytestmark = [pytest.mark.autoscale, pytest.mark.ray, pytest.mark.slow]


def test_judge_follows_a_load_ramp(cloud, timeline, tmp_path):
    ramp = Ramp()
    run = serve_under_ramp(cloud, timeline, tmp_path, ramp)
    record(timeline, run)
    f = run.figures
    assert f["failed"] == 0, run.details["errors"]
    for window in ("scale_up", "preemption", "scale_down"):
        assert f[f"{window}_requests"] > 0, window   # each transition ran under load
    # Replicas went 1 -> N on as many GPU instances, and back to none once the service was deleted.
    assert f["peak_replicas"] >= ramp.replicas and f["peak_gpu_instances"] >= ramp.replicas
    assert timeline.samples[-1]["replicas"].get(DEPLOYMENT, 0) == 0 and not cloud.gpu_nodes()
