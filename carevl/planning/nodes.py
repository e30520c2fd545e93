"""The node types a job can be placed on: from a cluster launcher YAML (what the autoscaler may start),
from the running Ray cluster (what is up now), or this machine alone."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import ray
import torch
import yaml

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


def from_cluster_yaml(path: str, prices: dict[str, float] | None = None) -> list[NodeType]:
    """Worker node types of a Ray cluster launcher file (a head that advertises no CPU and no GPU
    schedules nothing and is left out). Hardware and price come from the instance table."""
    cluster = yaml.safe_load(_resolve(path).read_text())
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
    `planning.cluster`, else the running Ray cluster, else this machine."""
    source = cluster or config.planning.cluster
    if source == "local":
        return [this_machine(measure)]
    if source:
        return from_cluster_yaml(source, config.planning.prices)
    if ray.is_initialized():
        types = from_ray_cluster(ray.nodes())
        if types:
            return types
    return [this_machine(measure)]
