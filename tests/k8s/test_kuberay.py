"""k8s/*.yaml: valid KubeRay resources (strictly, against the pinned CRD schemas), token auth on, worker
groups identical to cluster.yaml's node types, and the RayService running serve_configs/judge.yaml."""
from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml

from carevl.serving.builder import JudgeAppArgs

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = {"RayJob": REPO / "k8s" / "rayjob-curate.yaml", "RayService": REPO / "k8s" / "rayservice-judge.yaml"}
CRDS = {"RayJob": REPO / "k8s" / "crds" / "ray.io_rayjobs.yaml",
        "RayService": REPO / "k8s" / "crds" / "ray.io_rayservices.yaml"}


def strict(schema):
    """The CRD schema as `kubectl apply --validate=strict` reads it: unknown fields are errors wherever
    the schema lists properties and does not preserve unknown fields."""
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


@pytest.fixture(scope="module", params=sorted(MANIFESTS))
def resource(request):
    kind = request.param
    crd = yaml.safe_load(CRDS[kind].read_text())
    [version] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    validator = jsonschema.Draft7Validator(strict(version["schema"]["openAPIV3Schema"]))
    return kind, yaml.safe_load(MANIFESTS[kind].read_text()), validator


def _cluster_spec(kind: str, doc: dict) -> dict:
    return doc["spec"]["rayClusterSpec" if kind == "RayJob" else "rayClusterConfig"]


def test_valid_against_the_kuberay_crd(resource):
    kind, doc, validator = resource
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == kind
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, [f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors]


def test_validation_is_not_a_rubber_stamp(resource):
    kind, doc, validator = resource
    unknown = copy.deepcopy(doc)
    _cluster_spec(kind, unknown)["headGroupSpec"]["rayStartParam"] = {}
    wrong_type = copy.deepcopy(doc)
    _cluster_spec(kind, wrong_type)["workerGroupSpecs"][0]["maxReplicas"] = "eight"
    bad_auth = copy.deepcopy(doc)
    _cluster_spec(kind, bad_auth)["authOptions"]["mode"] = "password"
    for broken in (unknown, wrong_type, bad_auth):
        assert list(validator.iter_errors(broken))


def test_token_auth_is_on(resource):
    kind, doc, _ = resource
    auth = _cluster_spec(kind, doc)["authOptions"]
    assert auth["mode"] == "token" and auth["secretName"]
    assert "disabled" not in MANIFESTS[kind].read_text()


def test_worker_groups_match_cluster_yaml(resource):
    kind, doc, _ = resource
    cluster = yaml.safe_load((REPO / "cluster.yaml").read_text())
    spec = _cluster_spec(kind, doc)
    head = cluster["available_node_types"][cluster["head_node_type"]]
    assert spec["headGroupSpec"]["rayStartParams"] == {"num-cpus": str(head["resources"]["CPU"]),
                                                       "num-gpus": str(head["resources"]["GPU"])}
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    types = {k.replace("_", "-"): v for k, v in cluster["available_node_types"].items() if k != cluster["head_node_type"]}
    assert set(groups) == set(types)
    for name, node in types.items():
        group, gpus = groups[name], node["resources"].get("GPU", 0)
        assert (group["minReplicas"], group["maxReplicas"]) == (node["min_workers"], node["max_workers"]), name
        assert group["rayStartParams"]["num-cpus"] == str(node["resources"]["CPU"]), name
        assert group["rayStartParams"].get("num-gpus", "0") == str(gpus), name
        pod = group["template"]["spec"]
        [container] = pod["containers"]
        assert container["resources"]["limits"].get("nvidia.com/gpu", "0") == str(gpus), name
        assert pod["nodeSelector"]["node.kubernetes.io/instance-type"] == node["node_config"]["InstanceType"], name
        assert ("gpu" in container["image"]) == bool(gpus), name


def test_rayservice_embeds_the_judge_serve_config():
    doc = yaml.safe_load(MANIFESTS["RayService"].read_text())
    embedded = yaml.safe_load(doc["spec"]["serveConfigV2"])
    assert embedded == yaml.safe_load((REPO / "serve_configs" / "judge.yaml").read_text())
    [app] = embedded["applications"]
    JudgeAppArgs.model_validate(app["args"])  # the builder accepts the args as they are
    env = {e["name"] for g in _cluster_spec("RayService", doc)["workerGroupSpecs"]
           for e in g["template"]["spec"]["containers"][0].get("env", [])}
    assert app["args"]["api_token_env"] in env


def test_rayjob_runs_the_curation_entry_point():
    doc = yaml.safe_load(MANIFESTS["RayJob"].read_text())
    command = doc["spec"]["entrypoint"].split()
    assert command[:3] == ["python", "-m", "ray_jobs.curate"]
    assert (REPO / command[command.index("--config") + 1]).is_file()
    assert doc["spec"]["shutdownAfterJobFinishes"] is True
    # KubeRay starts with no worker and publishes no node types: the job checks placement against the
    # cluster.yaml its worker groups mirror.
    assert command[command.index("--set") + 1:command.index("--set") + 2] == ["planning.cluster=cluster.yaml"]
