"""Roofline time, device-hours and cost of each model's work (see `workload` for the counts)."""
from __future__ import annotations

from dataclasses import dataclass

from carevl.config import CarevlConfig
from carevl.planning.nodes import NodeType
from carevl.planning.placement import Need
from carevl.planning.shapes import ModelShape
from carevl.planning.workload import Work

TRAIN_FACTOR = 3.0   # forward + backward = 3 forward passes (Kaplan et al. 2020: 6N per token)


@dataclass(frozen=True)
class Flops:
    prefill: float
    decode: float
    train: float


def work_flops(work: Work, shape: ModelShape) -> Flops:
    """FLOPs of all requests of `work`: prompts attend to half their length on average, generated tokens
    to the prompt plus half the answer; image tokens also pass the vision tower."""
    prompt = (work.prompt_tokens * shape.forward_flops_per_token(work.prompt_tokens / 2, generate=False)
              + work.image_tokens * shape.vision_flops_per_token())
    if work.train_passes:
        return Flops(0.0, 0.0, work.requests * prompt * (TRAIN_FACTOR * work.train_passes + work.extra_forward))
    decode = work.new_tokens * shape.forward_flops_per_token(work.prompt_tokens + work.new_tokens / 2, generate=True)
    return Flops(work.requests * prompt, work.requests * decode, 0.0)


def _device_rate(need: Need, node: NodeType) -> tuple[float, str, float | None]:
    """(peak FLOP/s of one replica, device kind, USD per device-hour) on `node`."""
    if need.gpus > 0:
        per_device = node.usd_per_hour / node.gpus if node.usd_per_hour is not None and node.gpus else None
        return need.gpus * (node.gpu_tflops or 0) * 1e12, "GPU", per_device
    share = need.cpus / node.cpus if node.cpus else 0
    per_device = node.usd_per_hour / node.cpus if node.usd_per_hour is not None and node.cpus else None
    return share * (node.cpu_tflops or 0) * 1e12, "CPU", per_device


def best_node(need: Need, nodes: list[NodeType]) -> NodeType | None:
    """The fitting node type with the lowest price per FLOP (the fastest when prices are unknown); for a
    model that fits nowhere, the node types with enough devices, so its cost is still shown."""
    fitting = [n for n in nodes if n.name in need.fits] or [
        n for n in nodes if (n.gpus >= need.gpus if need.gpus else n.cpus >= need.cpus)]

    def key(node: NodeType):
        peak, _, price = _device_rate(need, node)
        if peak <= 0:
            return (2, 0.0)
        return (0, price / peak) if price is not None else (1, -peak)
    return min(fitting, key=key, default=None)


def estimate(work: Work, need: Need, nodes: list[NodeType], config: CarevlConfig) -> Work:
    """Fill in FLOPs, seconds on one replica, device-hours, replicas, wall hours and cost (in place)."""
    plan = config.planning
    if need.external:
        price = plan.api_prices.get(need.spec.path)
        work.device, work.note = "API", work.note or f"endpoint model {need.spec.path}"
        if price is not None:
            work.api_usd = (work.total_prompt_tokens * price.input + work.total_new_tokens * price.output) / 1e6
        return work
    node = best_node(need, nodes)
    if need.shape is None or node is None:
        work.note = need.note or "does not fit any node type"
        return work
    peak, work.device, per_device = _device_rate(need, node)
    if peak <= 0:
        work.note = f"no peak FLOP/s known for {node.name}"
        return work
    flops = work_flops(work, need.shape)
    work.flops = flops.prefill + flops.decode + flops.train
    work.seconds_one_replica = (flops.prefill / (plan.mfu.prefill * peak) + flops.decode / (plan.mfu.decode * peak)
                                + flops.train / (plan.mfu.train * peak))
    devices = need.gpus if need.gpus > 0 else need.cpus
    work.device_hours = work.seconds_one_replica / 3600 * devices
    work.node_type = node.name
    if node.name not in need.fits:
        work.note = f"{need.model} does not fit {node.name}: estimated there as if it did"
    if need.stage in ("sft", "dpo"):
        work.replicas = getattr(config, need.stage).num_workers
    else:
        work.replicas = max(1, min(need.spec.resources.concurrency[1], node.max_nodes * need.fits.get(node.name, 1)))
    work.wall_hours = work.seconds_one_replica / work.replicas / 3600
    work.usd = work.device_hours * per_device if per_device is not None else None
    return work


def stage_totals(works: list[Work], nodes: list[NodeType]) -> dict[str, dict]:
    """Per stage: device-hours, cost, API cost and wall-clock hours. The actor pools of curation and
    refinement stream concurrently, so a stage takes as long as its slowest pool (one pool per model and
    role; a candidate model samples all its temperatures in one pool), and no less than its GPU-hours
    spread over every GPU of the cluster."""
    cluster_gpus = sum(n.gpus * n.max_nodes for n in nodes)
    totals: dict[str, dict] = {}
    pools: dict[tuple[str, str, str], float] = {}
    for w in works:
        t = totals.setdefault(w.stage, {"gpu_hours": 0.0, "cpu_hours": 0.0, "usd": 0.0, "api_usd": 0.0,
                                        "wall_hours": 0.0, "priced": True})
        t["api_usd"] += w.api_usd or 0.0
        if w.device != "API":
            t["gpu_hours" if w.device == "GPU" else "cpu_hours"] += w.device_hours
            t["usd"] += w.usd or 0.0
            t["priced"] &= w.usd is not None
        pool = (w.stage, w.model, w.role.split()[0])
        pools[pool] = pools.get(pool, 0.0) + w.wall_hours
        t["wall_hours"] = max(t["wall_hours"], pools[pool])
    for t in totals.values():
        if cluster_gpus:
            t["wall_hours"] = max(t["wall_hours"], t["gpu_hours"] / cluster_gpus)
        if not t.pop("priced"):
            t["usd"] = None
    return totals
