"""The `ray up` default, autoscaler v1, on the same fake cloud: curation from zero GPU instances and back.
The other scenarios run on v2 only (KubeRay's default): each costs minutes on a 2-core machine, and what
they add (preemption, Serve, Ray Train) sits above the autoscaler, not in it."""
from __future__ import annotations

import pytest

from carevl.testing.scaling_scenarios import curation_from_zero

from tests.autoscale.conftest import check_curation_from_zero, record, recording, start_cloud

pytestmark = [pytest.mark.autoscale, pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def cloud_v1(model_cache_env):
    fake = start_cloud("v1", model_cache_env)
    yield fake
    fake.stop()


def test_curation_from_zero_on_autoscaler_v1(cloud_v1, tmp_path):
    with recording(cloud_v1, "test_curation_from_zero_on_autoscaler_v1") as timeline:
        run = curation_from_zero(cloud_v1, timeline, tmp_path)
        record(timeline, run)
    check_curation_from_zero(run, cloud_v1, timeline)
