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


def test_head_publishes_the_node_types_its_autoscaler_launches(cluster):
    """Jobs check placement against the node types the head's autoscaler may launch: the head publishes
    the same config file its autoscaler reads, to its own GCS port."""
    [start] = [c for c in cluster["head_start_ray_commands"] if "ray start" in c]
    [publish] = [c for c in cluster["head_start_ray_commands"] if "publish_node_types" in c]
    config = next(w.split("=", 1)[1] for w in start.split() if w.startswith("--autoscaling-config="))
    port = next(w.split("=", 1)[1] for w in start.split() if w.startswith("--port="))
    assert f"publish_node_types('{config}', '127.0.0.1:{port}')" in publish
    assert "RAY_AUTH_MODE=token" in publish
    assert cluster["head_start_ray_commands"].index(publish) > cluster["head_start_ray_commands"].index(start)


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


# ------------------------------------------------ one source for the autoscaling settings

K8S = {"RayJob": (REPO / "k8s" / "rayjob-curate.yaml", "rayClusterSpec"),
       "RayService": (REPO / "k8s" / "rayservice-judge.yaml", "rayClusterConfig")}


def _comparable(types: dict, head: str) -> dict:
    """Worker types by cluster.yaml's names (KubeRay group names use '-' for '_'): CPU, GPU, min, max."""
    return {name.replace("-", "_"): (node["resources"].get("CPU", 0), node["resources"].get("GPU", 0),
                                     node.get("min_workers", 0), node["max_workers"])
            for name, node in types.items() if name != head}


@pytest.mark.parametrize("kind", sorted(K8S))
def test_kuberay_autoscaler_sees_the_cluster_yaml_cluster(cluster, kind):
    """The autoscaling config KubeRay's autoscaler derives from the manifest (Ray's own translation)
    has cluster.yaml's node types, counts, idle timeout and upscaling speed."""
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr

    path, key = K8S[kind]
    spec = yaml.safe_load(path.read_text())["spec"][key]
    assert spec["enableInTreeAutoscaling"] is True and spec["autoscalerOptions"]["version"] == "v2"
    derived = _derive_autoscaling_config_from_ray_cr({"metadata": {"name": "carevl", "namespace": "default"},
                                                      "spec": spec})
    assert _comparable(derived["available_node_types"], derived["head_node_type"]) == \
        _comparable(cluster["available_node_types"], cluster["head_node_type"])
    for setting in ("idle_timeout_minutes", "upscaling_speed", "max_workers"):
        assert derived[setting] == cluster[setting], setting


def test_kuberay_drift_is_caught(cluster):
    """The comparison above fails when one side changes."""
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr

    spec = yaml.safe_load(K8S["RayJob"][0].read_text())["spec"]["rayClusterSpec"]
    spec["autoscalerOptions"]["idleTimeoutSeconds"] = 60
    spec["workerGroupSpecs"][1]["maxReplicas"] = 3
    derived = _derive_autoscaling_config_from_ray_cr({"metadata": {"name": "c", "namespace": "d"}, "spec": spec})
    assert derived["idle_timeout_minutes"] != cluster["idle_timeout_minutes"]
    assert _comparable(derived["available_node_types"], derived["head_node_type"]) != \
        _comparable(cluster["available_node_types"], cluster["head_node_type"])


def test_the_fake_cloud_is_cluster_yaml_scaled(cluster):
    """The autoscaling tier's cloud: the same worker type names and GPUs, its CPUs, caps and delays
    scaled by the stated factors only."""
    from carevl.testing.fake_cloud import (
        HEAD_TYPE,
        MAX_NODES_PER_TYPE,
        MAX_WORKERS,
        SIZE_SCALE,
        TIME_SCALE,
        autoscaling_config,
    )

    fake = autoscaling_config(cluster, "127.0.0.1:1", autoscaler_v2=True, instance_temp_root="/tmp/x")
    workers = _workers(cluster)
    fake_workers = {k: v for k, v in fake["available_node_types"].items() if k != HEAD_TYPE}
    assert set(fake_workers) == set(workers)
    for name, node in workers.items():
        res = fake_workers[name]["resources"]
        assert res.get("GPU", 0) == node["resources"].get("GPU", 0), name
        assert res["CPU"] == max(1, -(-node["resources"]["CPU"] // SIZE_SCALE)), name
        assert fake_workers[name]["max_workers"] == min(node["max_workers"], MAX_NODES_PER_TYPE), name
    assert fake["idle_timeout_minutes"] * TIME_SCALE == cluster["idle_timeout_minutes"]
    assert fake["upscaling_speed"] == cluster["upscaling_speed"]
    assert fake["max_workers"] == min(cluster["max_workers"], MAX_WORKERS)


def test_the_tier_serves_judge_yaml(cluster):
    """The judge the tier loads: serve_configs/judge.yaml's autoscaling (delays scaled by the tier's
    time factor), GPUs, queue limits and proxies; and the cluster can hold its largest replica count."""
    from carevl.testing.fake_cloud import TIME_SCALE
    from carevl.testing.serve_scaling import DELAY_KEYS, judge_app, tier_serve_config

    doc, app = judge_app()
    tier = tier_serve_config(8000)
    [tier_app] = tier["applications"]
    want, got = app["args"]["autoscaling_config"], tier_app["args"]["autoscaling_config"]
    assert set(got) == set(want) and {"upscale_delay_s", "downscale_delay_s", "look_back_period_s"} <= set(want)
    for key, value in want.items():
        assert got[key] == (value / TIME_SCALE if key in DELAY_KEYS else value), key
    for key in ("num_gpus", "max_ongoing_requests", "max_queued_requests", "max_batch_size", "api_token_env", "limits"):
        assert tier_app["args"][key] == app["args"][key], key
    assert tier["proxy_location"] == doc["proxy_location"]
    gpus = sum(n["max_workers"] * n["resources"].get("GPU", 0) for n in _workers(cluster).values())
    assert want["max_replicas"] * app["args"]["num_gpus"] <= gpus
