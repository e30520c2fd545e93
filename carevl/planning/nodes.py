"""The node types a job can be placed on: from a cluster launcher YAML (what the autoscaler may start),
from the running Ray cluster (the node types its autoscaler may launch, else what is up now), or this
machine alone.

An autoscaling cluster starts with no workers, so the nodes that are up say nothing about where a job
can run. Ray keeps the autoscaler's node types in the GCS (the `ClusterConfig` of its autoscaler state
service, which Ray Train reads to refuse a worker group no node type can hold); `publish_node_types`
writes it from a cluster launcher config (cluster.yaml's head start commands and the fake cloud of the
autoscaling tests call it), and `node_types` reads it before it falls back to the nodes that are up.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import ray
import torch
import yaml
from ray.core.generated import autoscaler_pb2

from carevl.config import REPO_ROOT, CarevlConfig

INSTANCES = Path(__file__).with_name("instances.yaml")
GB = 1e9


@dataclass(frozen=True)
class NodeType:
    """One kind of node. GPU figures are per GPU; None where the source does not say."""

    name: str
    cpus: float
    gpus: int
    max_nodes: int
    gpu_name: str | None = None
    gpu_memory_gb: float | None = None
    gpu_tflops: float | None = None      # dense BF16 peak per GPU
    host_memory_gb: float | None = None
    cpu_tflops: float | None = None      # measured for this machine only (calibration)
    usd_per_hour: float | None = None
    instance: str | None = None

    def label(self) -> str:
        gpu = f"{self.gpus}x {self.gpu_name or 'GPU'} {self.gpu_memory_gb or '?'} GB" if self.gpus else "no GPU"
        return f"{self.name} ({self.instance or 'node'}: {self.cpus:g} CPU, {gpu})"


@lru_cache(maxsize=1)
def instance_table() -> dict[str, dict]:
    return yaml.safe_load(INSTANCES.read_text())


def _resolve(path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() or p.exists() else REPO_ROOT / p


def read_cluster_yaml(path: str | Path) -> dict:
    """A cluster launcher file as a dict (relative paths: the repository root)."""
    return yaml.safe_load(_resolve(str(path)).read_text())


def from_cluster_yaml(path: str | Path | dict, prices: dict[str, float] | None = None) -> list[NodeType]:
    """Worker node types of a Ray cluster launcher file or its dict (a head that advertises no CPU and
    no GPU schedules nothing and is left out). Hardware and price come from the instance table."""
    cluster = path if isinstance(path, dict) else read_cluster_yaml(path)
    head = cluster.get("head_node_type")
    types = []
    for name, node in cluster["available_node_types"].items():
        resources = node.get("resources", {})
        if name == head and not resources.get("CPU") and not resources.get("GPU"):
            continue
        instance = node.get("node_config", {}).get("InstanceType")
        row = instance_table().get(instance, {})
        gpus = int(resources.get("GPU", row.get("gpus", 0)))
        price = (prices or {}).get(name, row.get("usd_per_hour"))
        types.append(NodeType(
            name=name, cpus=float(resources.get("CPU", row.get("vcpus", 0))), gpus=gpus,
            max_nodes=1 if name == head else int(node.get("max_workers", 0)),
            gpu_name=row.get("gpu") if gpus else None, gpu_memory_gb=row.get("gpu_memory_gb") if gpus else None,
            gpu_tflops=row.get("gpu_tflops") if gpus else None, host_memory_gb=row.get("host_memory_gb"),
            usd_per_hour=price, instance=instance))
    if not types:
        raise ValueError(f"{path}: no node type that can run work")
    return types


# ------------------------------------------------------------ the autoscaler's node types in the GCS

def autoscaler_record(cluster: dict) -> autoscaler_pb2.ClusterConfig:
    """Ray's record of what an autoscaler may launch, for a cluster launcher config: every worker node
    type with its declared resources (whole units, as the record holds them) and min/max counts; the
    head is not launchable and is left out."""
    record = autoscaler_pb2.ClusterConfig()
    head = cluster.get("head_node_type")
    for name, node in cluster["available_node_types"].items():
        if name == head:
            continue
        group = record.node_group_configs.add(name=name, min_count=int(node.get("min_workers", 0)),
                                              max_count=int(node.get("max_workers", cluster.get("max_workers", 0))))
        for resource, amount in node.get("resources", {}).items():
            if amount:
                group.resources[resource] = int(round(amount))
    return record


def publish_node_types(cluster: str | Path | dict, gcs_address: str) -> int:
    """Write the autoscaler's node types of `cluster` (a launcher YAML path, e.g. the head's
    ~/ray_bootstrap_config.yaml, or its dict) into the GCS at `gcs_address`; returns how many."""
    config = cluster if isinstance(cluster, dict) else yaml.safe_load(Path(cluster).expanduser().read_text())
    record = autoscaler_record(config)
    ray._raylet.GcsClient(address=gcs_address).report_cluster_config(record.SerializeToString())
    return len(record.node_group_configs)


def from_autoscaler_record(record: autoscaler_pb2.ClusterConfig | None) -> list[NodeType]:
    """Node types of the record (GPU model and memory are not in it: only counts are checked)."""
    types = []
    for group in record.node_group_configs if record else ():
        res = dict(group.resources)
        if not (res.get("CPU") or res.get("GPU")) or group.max_count == 0:
            continue
        types.append(NodeType(name=group.name, cpus=float(res.get("CPU", 0)), gpus=int(res.get("GPU", 0)),
                              max_nodes=group.max_count if group.max_count > 0 else 10 ** 6,
                              host_memory_gb=res["memory"] / GB if res.get("memory") else None, instance="autoscaler"))
    return types


def launchable_node_types() -> list[NodeType]:
    """The node types the running cluster's autoscaler may launch, from the record it published in the
    GCS (`publish_node_types`); [] when none was published or Ray is not running."""
    return from_autoscaler_record(ray._private.state.state.get_cluster_config()) if ray.is_initialized() else []


def _gpu_by_accelerator(resources: dict) -> dict:
    """GPU facts from Ray's `accelerator_type:<name>` resource, matched against the instance table."""
    names = [k.split(":", 1)[1] for k in resources if k.startswith("accelerator_type:")]
    for row in instance_table().values():
        if row.get("gpu") and any(row["gpu"].startswith(n) or n.startswith(row["gpu"]) for n in names):
            return row
    return {}


def from_ray_cluster(nodes: list[dict]) -> list[NodeType]:
    """Node types of a running cluster (`ray.nodes()`), one type per distinct resource shape."""
    shapes: dict[tuple, NodeType] = {}
    for node in nodes:
        if not node.get("Alive"):
            continue
        res = node.get("Resources", {})
        row = _gpu_by_accelerator(res)
        key = (res.get("CPU", 0), res.get("GPU", 0), row.get("gpu"))
        if key in shapes:
            shapes[key] = NodeType(**{**shapes[key].__dict__, "max_nodes": shapes[key].max_nodes + 1})
            continue
        gpus = int(res.get("GPU", 0))
        shapes[key] = NodeType(
            name=f"ray_node_{len(shapes)}", cpus=float(res.get("CPU", 0)), gpus=gpus, max_nodes=1,
            gpu_name=row.get("gpu") if gpus else None, gpu_memory_gb=row.get("gpu_memory_gb") if gpus else None,
            gpu_tflops=row.get("gpu_tflops") if gpus else None, host_memory_gb=res.get("memory", 0) / GB or None)
    return [t for t in shapes.values() if t.cpus or t.gpus]


def this_machine(measure: bool = False) -> NodeType:
    """This machine as a one-node cluster; `measure` times a dense matmul for its FP32 peak."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB
    return NodeType(name="this_machine", cpus=float(os.cpu_count() or 1), gpus=0, max_nodes=1,
                    host_memory_gb=round(memory, 1), cpu_tflops=measured_cpu_tflops() if measure else None,
                    usd_per_hour=None, instance="local")


def measured_cpu_tflops(size: int = 1024, seconds: float = 1.0) -> float:
    """Dense FP32 matmul rate of this machine with all its cores (the best of repeated runs): the
    practical peak that CPU runs are measured against."""
    torch.set_num_threads(os.cpu_count() or 1)
    a, b = torch.randn(size, size), torch.randn(size, size)
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * size ** 3 / (time.perf_counter() - start))
    return best / 1e12


def node_types(config: CarevlConfig, cluster: str | None = None, measure: bool = False) -> list[NodeType]:
    """The node types for planning: `cluster` (a launcher YAML path, or `local`), else
    `planning.cluster`, else the running Ray cluster (the node types its autoscaler may launch when it
    published them, else the nodes that are up), else this machine."""
    source = cluster or config.planning.cluster
    if source == "local":
        return [this_machine(measure)]
    if source:
        return from_cluster_yaml(source, config.planning.prices)
    if ray.is_initialized():
        types = launchable_node_types() or from_ray_cluster(ray.nodes())
        if types:
            return types
    return [this_machine(measure)]
