"""The fake cloud's settings, without starting it (default suite): Ray's timers it scales still have the
defaults it was written against, and it runs cluster.yaml's own head command."""
from __future__ import annotations

from pathlib import Path

import pytest

from carevl.planning.nodes import read_cluster_yaml
from carevl.testing.fake_cloud import RAY_TIMERS, TIME_SCALE, publish_command, scaled_timers


def test_scaled_timers_start_from_rays_defaults():
    from ray.data._internal.cluster_autoscaler.default_cluster_autoscaler_v2 import DefaultClusterAutoscalerV2
    from ray.data._internal.cluster_autoscaler.rate_based_cluster_autoscaler import RateBasedClusterAutoscaler
    from ray.serve._private import constants as serve
    from ray.train.v2._internal.constants import DEFAULT_PREEMPTION_POLL_INTERVAL_S

    defaults = {
        "RAY_SERVE_PROXY_MIN_DRAINING_PERIOD_S": serve.PROXY_MIN_DRAINING_PERIOD_S,
        "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": serve.RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S,
        "RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S": serve.RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S,
        "RAY_DATA_AUTOSCALING_REQUEST_EXPIRE_TIME_S": RateBasedClusterAutoscaler.AUTOSCALING_REQUEST_EXPIRE_TIME_S,
        "RAY_DATA_LOW_UTIL_REQUEST_RELEASE_DELAY_S": DefaultClusterAutoscalerV2.DEFAULT_LOW_UTIL_REQUEST_RELEASE_DELAY_S,
        "RAY_TRAIN_PREEMPTION_POLL_INTERVAL_S": DEFAULT_PREEMPTION_POLL_INTERVAL_S,
    }
    assert RAY_TIMERS == defaults
    scaled = scaled_timers()
    assert float(scaled["RAY_SERVE_PROXY_MIN_DRAINING_PERIOD_S"]) == pytest.approx(30 / TIME_SCALE, rel=0.01)
    assert scaled["RAY_DATA_AUTOSCALING_REQUEST_EXPIRE_TIME_S"] == str(round(180 / TIME_SCALE))  # Ray reads an int


def test_the_cloud_runs_cluster_yamls_publish_command(repo_root):
    cluster = read_cluster_yaml(repo_root / "cluster.yaml")
    command = publish_command(cluster, Path("/tmp/x/autoscaling.json"), "127.0.0.1:4242")
    assert "publish_node_types('/tmp/x/autoscaling.json', '127.0.0.1:4242')" in command
    assert "RAY_AUTH_MODE=token" in command
    cluster["head_start_ray_commands"] = [c for c in cluster["head_start_ray_commands"] if "publish" not in c]
    with pytest.raises(ValueError, match="publishing"):
        publish_command(cluster, Path("/tmp/x"), "127.0.0.1:1")
