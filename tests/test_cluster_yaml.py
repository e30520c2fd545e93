"""cluster.yaml: valid for Ray's cluster launcher, sized for the paper preset, locked down."""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from carevl.config import load_config

REPO = Path(__file__).resolve().parents[1]
# GPUs per instance for the types the file uses (80 GB A100/H100, 48 GB L40S).
INSTANCE_GPUS = {"p4de.24xlarge": 8, "p5.48xlarge": 8, "g6e.4xlarge": 1}
OPEN_TO_ALL = ("0.0.0.0/0", "::/0")


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def _workers(cluster: dict) -> dict:
    return {k: v for k, v in cluster["available_node_types"].items() if k != cluster["head_node_type"]}


def test_passes_rays_own_schema_and_checks(cluster):
    schema_path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    jsonschema.validate(cluster, json.loads(schema_path.read_text()))
    validate_config(copy.deepcopy(cluster))
    # The launcher merges its AWS defaults before use; the merged config must validate too.
    validate_config(prepare_config(copy.deepcopy(cluster)))


def test_rays_validation_is_not_a_rubber_stamp(cluster):
    broken = copy.deepcopy(cluster)
    broken["available_node_types"]["head"]["unknown_field"] = 1
    with pytest.raises(jsonschema.ValidationError):
        validate_config(broken)


def test_autoscaling_bounds(cluster):
    workers = _workers(cluster)
    for name, node in workers.items():
        assert 0 <= node["min_workers"] <= node["max_workers"], name
    assert sum(n["min_workers"] for n in workers.values()) <= cluster["max_workers"]
    assert sum(n["max_workers"] for n in workers.values()) == cluster["max_workers"]
    assert cluster["idle_timeout_minutes"] > 0


def test_head_schedules_no_work(cluster):
    head = cluster["available_node_types"][cluster["head_node_type"]]
    assert head["resources"].get("CPU") == 0
    assert head["resources"].get("GPU", 0) == 0
    assert head["node_config"]["InstanceType"] not in INSTANCE_GPUS


def test_gpu_types_match_declared_resources(cluster):
    gpu_counts = set()
    for name, node in _workers(cluster).items():
        instance = node["node_config"]["InstanceType"]
        declared = node["resources"].get("GPU", 0)
        assert declared == INSTANCE_GPUS.get(instance, 0), name
        gpu_counts.add(declared)
    assert {1, 8} <= gpu_counts


def test_sized_for_the_paper_preset(cluster):
    config = load_config(REPO / "configs" / "paper.yaml")
    nodes = list(_workers(cluster).values())
    max_gpus = max(n["resources"].get("GPU", 0) for n in nodes)
    for name, spec in config.models.items():
        res = spec.resources
        if res.num_gpus == 0:
            continue
        per_replica = max(res.num_gpus, res.tensor_parallel_size)
        assert per_replica <= max_gpus, f"{name} needs {per_replica} GPUs on one node"
        fits = [n for n in nodes if n["resources"].get("GPU", 0) >= per_replica
                and n["resources"]["CPU"] >= res.num_cpus]
        assert fits, name
    for stage in (config.sft, config.dpo):
        gpus = stage.num_workers * stage.resources_per_worker.get("GPU", 0)
        cpus = stage.num_workers * stage.resources_per_worker.get("CPU", 0)
        total_gpus = sum(n["max_workers"] * n["resources"].get("GPU", 0) for n in nodes)
        assert gpus <= total_gpus and any(n["resources"]["CPU"] * n["max_workers"] >= cpus for n in nodes)


def test_token_auth_is_on_everywhere(cluster):
    assert any("RAY_AUTH_MODE=token" in c for c in cluster["initialization_commands"])
    for command in cluster["head_start_ray_commands"] + cluster["worker_start_ray_commands"]:
        if "ray start" in command:
            assert "RAY_AUTH_MODE=token" in command
    mounts = cluster["file_mounts"]
    assert any(dst.endswith("/.ray/auth_token") and src == "~/.ray/auth_token" for dst, src in mounts.items())
    assert "RAY_AUTH_MODE=disabled" not in (REPO / "cluster.yaml").read_text()


def test_dashboard_not_open_to_the_internet(cluster):
    [head_start] = [c for c in cluster["head_start_ray_commands"] if "ray start" in c]
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "0.0.0.0" not in " ".join(cluster["head_start_ray_commands"])
    # Every node type names its own security group, so Ray never creates its default group
    # (which opens SSH to 0.0.0.0/0); any extra rules in the file are never open to everyone.
    for name, node in cluster["available_node_types"].items():
        assert node["node_config"].get("SecurityGroupIds"), name
    for rule in cluster["provider"].get("security_group", {}).get("IpPermissions", []):
        ranges = [r.get("CidrIp") for r in rule.get("IpRanges", [])] + \
                 [r.get("CidrIpv6") for r in rule.get("Ipv6Ranges", [])]
        assert not set(ranges) & set(OPEN_TO_ALL), rule


def test_setup_installs_the_project(cluster):
    for name, node in _workers(cluster).items():
        # A node type's own worker_setup_commands replace the global lists entirely.
        commands = node.get("worker_setup_commands",
                            cluster["setup_commands"] + cluster["worker_setup_commands"])
        joined = " ".join(commands)
        assert "chmod 600 ~/.ray/auth_token" in joined, name
        wants_gpu = node["resources"].get("GPU", 0) > 0
        assert ("~/carevl[gpu]" in joined) == wants_gpu and "pip install" in joined, name
    assert any("pip install" in c and "~/carevl" in c for c in cluster["head_setup_commands"])
    assert cluster["file_mounts"]["~/carevl"] == "."
    assert os.path.isfile(REPO / "pyproject.toml")
