"""Node types from the autoscaler's record in the GCS: what a job's placement check consults on an
autoscaling cluster that has no worker yet."""
from __future__ import annotations

import pytest
import yaml
from ray.core.generated import autoscaler_pb2

from carevl.config import REPO_ROOT, load_config
from carevl.planning.nodes import (
    autoscaler_record,
    from_autoscaler_record,
    from_cluster_yaml,
    node_types,
    publish_node_types,
)

CLUSTER = yaml.safe_load((REPO_ROOT / "cluster.yaml").read_text())


def test_record_holds_every_worker_type_of_the_launcher_file():
    record = autoscaler_pb2.ClusterConfig.FromString(autoscaler_record(CLUSTER).SerializeToString())
    from_file = {t.name: (t.cpus, t.gpus, t.max_nodes) for t in from_cluster_yaml(CLUSTER)}
    from_record = {t.name: (t.cpus, t.gpus, t.max_nodes) for t in from_autoscaler_record(record)}
    assert from_record == from_file
    assert CLUSTER["head_node_type"] not in {g.name for g in record.node_group_configs}
    assert {g.name: g.min_count for g in record.node_group_configs} == {
        name: node["min_workers"] for name, node in CLUSTER["available_node_types"].items()
        if name != CLUSTER["head_node_type"]}


def test_types_that_cannot_run_anything_are_left_out():
    record = autoscaler_pb2.ClusterConfig()
    record.node_group_configs.add(name="empty", max_count=4)
    gpu = record.node_group_configs.add(name="gpu", max_count=-1)
    gpu.resources["GPU"] = 1
    record.node_group_configs.add(name="off", max_count=0).resources["CPU"] = 8
    assert [(t.name, t.gpus, t.max_nodes > 1000) for t in from_autoscaler_record(record)] == [("gpu", 1, True)]
    assert from_autoscaler_record(None) == []


@pytest.mark.ray
def test_placement_consults_the_published_types_before_the_nodes_that_are_up(ray_local):
    gcs = ray_local.get_runtime_context().gcs_address
    config = load_config()
    assert [t.name for t in node_types(config)] != ["gpu_1x_l40s"]
    try:
        assert publish_node_types(REPO_ROOT / "cluster.yaml", gcs) == 4
        names = [t.name for t in node_types(config)]
        assert names == [n for n in CLUSTER["available_node_types"] if n != CLUSTER["head_node_type"]]
    finally:  # the shared session's cluster goes back to its own nodes
        ray_local._raylet.GcsClient(address=gcs).report_cluster_config(b"")
    assert [t.name for t in node_types(config)] != names


@pytest.mark.ray
def test_pools_waiting_for_an_autoscaler_are_not_a_warning(ray_local, caplog):
    import logging

    from carevl.config import Resources
    from carevl.ray_utils import check_fits, pool_args

    gcs = ray_local.get_runtime_context().gcs_address
    pools = [pool_args(Resources(num_cpus=1, num_gpus=1, batch_size=4, concurrency=(1, 1)))]
    with caplog.at_level(logging.INFO, logger="carevl.ray_utils"):
        check_fits(pools, 0.25)                              # no GPU here, no autoscaler: a warning
        try:
            publish_node_types(REPO_ROOT / "cluster.yaml", gcs)
            check_fits(pools, 0.25)                          # the autoscaler may add GPU nodes: info
        finally:
            ray_local._raylet.GcsClient(address=gcs).report_cluster_config(b"")
    [warned, waiting] = [r for r in caplog.records if r.name == "carevl.ray_utils"]
    assert warned.levelno == logging.WARNING and "add nodes" in warned.getMessage()
    assert waiting.levelno == logging.INFO and "gpu_1x_l40s" in waiting.getMessage()
