"""Where each model of each stage can run: its memory, the tensor-parallel degree it needs, the node
types it fits with how many replicas per node, and which models can share a GPU bundle.

`check_placement(config, stage)` is the check every job runs before it loads a model: a model that fits
no node type stops the job at once with a message naming the model, its memory and the largest node.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from carevl.config import CarevlConfig, ModelSpec
from carevl.config.stages import TrainStageConfig
from carevl.planning.memory import (
    FP32,
    Footprint,
    inference_footprint,
    sharded_training_footprint,
    tensor_parallel_needed,
    trainable_params,
    training_footprint,
)
from carevl.planning.nodes import GB, NodeType, node_types
from carevl.planning.shapes import ModelShape, ShapeUnknown, dtype_bytes, model_shape

log = logging.getLogger("carevl.planning")
STAGES = ("curate", "sft", "refine", "dpo")
CHECKPOINTING_KEYS = ("activation_checkpointing", "gradient_checkpointing")   # TRL's names, newer first


class PlacementError(ValueError):
    """A stage that can never be placed on the cluster; the message names every model that does not fit."""


@dataclass
class Need:
    """One model of one stage (or one training worker) and where it fits."""

    stage: str
    role: str
    model: str                       # key in `models`
    spec: ModelSpec
    gpus: float                      # per replica (tensor-parallel shards included)
    cpus: float
    tp: int
    shape: ModelShape | None = None
    footprint: Footprint | None = None
    tp_needed: int | None = None
    fits: dict[str, int] = field(default_factory=dict)   # node type -> replicas per node
    full_batch_fits: bool = True
    note: str = ""

    @property
    def external(self) -> bool:
        return self.spec.backend == "openai"


def _inference_need(stage: str, role: str, key: str, spec: ModelSpec) -> Need:
    r = spec.resources
    gpus = float(r.tensor_parallel_size) if r.tensor_parallel_size > 1 else r.num_gpus
    return Need(stage, role, key, spec, gpus=gpus, cpus=r.num_cpus, tp=r.tensor_parallel_size)


def stage_needs(config: CarevlConfig, stage: str) -> list[Need]:
    """The models a stage loads, each once, in data-flow order."""
    cur, models = config.curation, config.models
    if stage == "curate":
        roles = [(f"candidates ({c.model})", c.model) for c in cur.candidates]
        if cur.caption_backend == "model":
            roles += [("caption", cur.caption_model)]
        if cur.strong_judge.backend != "column":
            roles.append(("strong judge", cur.strong_judge.model))
        roles += [(f"expert", e) for e in cur.experts]
    elif stage == "refine":
        roles = [("critic (SFT judge)", config.sft.judge_model), ("critique scorer", config.refine.scorer_model)]
    elif stage in ("sft", "dpo"):
        section: TrainStageConfig = getattr(config, stage)
        res = section.resources_per_worker
        spec = models[config.sft.judge_model]
        sharded = "" if section.sharding == "none" else f", {section.sharding}"
        return [Need(stage, f"{stage} worker x{section.num_workers}{sharded}", config.sft.judge_model, spec,
                     gpus=float(res.get("GPU", 0)), cpus=float(res.get("CPU", 1)), tp=1)]
    else:
        raise ValueError(f"unknown stage '{stage}' (one of {STAGES})")
    seen, needs = set(), []
    for role, key in roles:
        if key not in seen:
            seen.add(key)
            needs.append(_inference_need(stage, role, key, models[key]))
    return needs


def recomputes_activations(trainer: dict, default: bool = True) -> bool:
    """Whether a stage's `trainer` section checkpoints activations: `activation_checkpointing`, else its
    older name `gradient_checkpointing`, else `default` (TRL's, on)."""
    for key in CHECKPOINTING_KEYS:
        if trainer.get(key) is not None:
            return bool(trainer[key])
    return default


def _training_footprint(stage: str, section: TrainStageConfig, spec: ModelSpec, shape: ModelShape,
                        nbytes: int) -> Footprint:
    """One Ray Train worker of `stage`: a whole replica, or its shard under `sharding: fsdp`."""
    trainer = section.trainer
    lora = section.lora.r if section.lora else None
    rows = int(trainer.get("per_device_train_batch_size", 8))
    # TRL's DPO runs a row's chosen and rejected answers through the model as one batch of 2 x rows sequences.
    kwargs = dict(micro_batch=rows * (2 if stage == "dpo" else 1),
                  max_length=int(trainer.get("max_length", spec.max_length)),
                  trainable=trainable_params(shape, section.freeze_vision, lora),
                  gradient_checkpointing=recomputes_activations(trainer))
    reference = stage == "dpo" and lora is None
    if section.sharding == "none":
        return training_footprint(shape, nbytes, reference_copy=reference, **kwargs)
    # Under bf16/fp16 mixed precision (TRL's default is bf16) accelerate keeps fp32 master weights.
    mixed = trainer.get("bf16", not trainer.get("fp16", False)) or trainer.get("fp16", False)
    return sharded_training_footprint(shape, nbytes, master_bytes=FP32 if mixed else nbytes,
                                      reference_model=reference, world_size=section.num_workers, **kwargs)


def footprint_of(need: Need, config: CarevlConfig) -> Footprint:
    spec, shape = need.spec, need.shape
    nbytes = dtype_bytes(spec)
    if need.stage in ("sft", "dpo"):
        return _training_footprint(need.stage, getattr(config, need.stage), spec, shape, nbytes)
    generates = spec.kind != "reward"
    return inference_footprint(shape, nbytes, spec.resources.batch_size, spec.max_length,
                               paged_kv=spec.backend == "vllm", kv_cache=generates or spec.backend == "vllm")


def _replicas_on(need: Need, node: NodeType, gpu_util: float, host_util: float) -> int:
    """Replicas of `need` one node of `node` holds (0: it does not fit there)."""
    fp = need.footprint
    by_cpu = math.floor(node.cpus / need.cpus + 1e-9) if need.cpus > 0 else 10 ** 6
    if need.gpus == 0:
        if fp and node.host_memory_gb and fp.minimum > node.host_memory_gb * GB * host_util:
            return 0
        by_memory = math.floor(node.host_memory_gb * GB * host_util / fp.total) if fp and node.host_memory_gb else by_cpu
        return max(0, min(by_cpu, by_memory))
    if node.gpus < math.ceil(need.gpus - 1e-9):
        return 0
    if fp and node.gpu_memory_gb:
        share = node.gpu_memory_gb * GB * gpu_util * (need.gpus if need.gpus < 1 else 1)
        if fp.minimum / max(need.gpus, 1) > share:
            return 0
    return max(0, min(by_cpu, math.floor(node.gpus / need.gpus + 1e-9)))


def place(need: Need, nodes: list[NodeType], config: CarevlConfig) -> Need:
    """Fill in shape, footprint, tensor-parallel degree and node fit (in place; returns `need`)."""
    plan = config.planning
    if need.external:
        need.note = f"endpoint {need.spec.endpoint}: no cluster resources"
        return need
    try:
        need.shape = model_shape(need.spec, config.paths.model_cache_dir())
    except ShapeUnknown as exc:
        need.note = f"memory unknown ({exc}); only CPU/GPU counts checked"
    if need.shape is not None:
        need.footprint = footprint_of(need, config)
        biggest = max((n for n in nodes if n.gpus), key=lambda n: n.gpu_memory_gb or 0, default=None)
        if biggest and biggest.gpu_memory_gb and need.spec.backend == "vllm" and need.stage not in ("sft", "dpo"):
            usable = biggest.gpu_memory_gb * GB * plan.gpu_memory_utilization
            need.tp_needed = tensor_parallel_needed(need.footprint.total, need.shape.heads, usable, biggest.gpus)
            need.full_batch_fits = need.tp_needed is not None and need.tp_needed <= need.tp
    for node in nodes:
        replicas = _replicas_on(need, node, plan.gpu_memory_utilization, plan.host_memory_utilization)
        if replicas:
            need.fits[node.name] = replicas
    return need


def colocation_groups(needs: list[Need]) -> dict[str, list[str]]:
    """Configured co-location groups (`resources.colocate_group`): models that share one actor and
    the GPU bundle whose shares they add up to."""
    groups: dict[str, list[str]] = {}
    for need in needs:
        if need.spec.resources.colocate_group:
            groups.setdefault(need.spec.resources.colocate_group, []).append(need.model)
    return groups


def could_share(needs: list[Need], gpu_bytes: float) -> list[list[str]]:
    """Models of one stage that could share one GPU: first-fit decreasing of the single-GPU models by
    their memory (at the configured batch) into GPUs of `gpu_bytes` usable memory."""
    single = sorted((n for n in needs if n.footprint and 0 < n.gpus <= 1 and n.tp == 1),
                    key=lambda n: -n.footprint.total)
    bins: list[tuple[float, list[str]]] = []
    for need in single:
        for i, (used, members) in enumerate(bins):
            if used + need.footprint.total <= gpu_bytes:
                bins[i] = (used + need.footprint.total, members + [need.model])
                break
        else:
            bins.append((need.footprint.total, [need.model]))
    return [members for _, members in bins if len(members) > 1]


def _largest(nodes: list[NodeType]) -> NodeType:
    return max(nodes, key=lambda n: (n.gpus * (n.gpu_memory_gb or 0), n.cpus, n.host_memory_gb or 0))


def _tp_hint(need: Need, nodes: list[NodeType], config: CarevlConfig) -> str:
    """'; it runs at tensor_parallel_size N' when a higher degree on the largest GPUs would place it."""
    biggest = max((n for n in nodes if n.gpus and n.gpu_memory_gb), key=lambda n: n.gpu_memory_gb, default=None)
    if not (need.footprint and need.shape and biggest) or need.stage in ("sft", "dpo") or need.gpus == 0:
        return ""
    usable = biggest.gpu_memory_gb * GB * config.planning.gpu_memory_utilization
    tp = tensor_parallel_needed(need.footprint.minimum, need.shape.heads, usable, biggest.gpus)
    return f"; it runs at tensor_parallel_size {tp}" if tp and tp > need.tp else ""


def placement_errors(needs: list[Need], nodes: list[NodeType], config: CarevlConfig) -> list[str]:
    """One message per model that fits no node type, or co-location group over its bundle."""
    errors = []
    largest = _largest(nodes)
    for need in needs:
        if need.external or need.fits:
            continue
        memory = f"{need.footprint.minimum / GB:.1f} GB" if need.footprint else "unknown memory"
        where = f"{need.gpus:g} GPU(s) (tensor_parallel_size {need.tp})" if need.gpus else f"{need.cpus:g} CPU"
        hint = _tp_hint(need, nodes, config)
        errors.append(f"{need.stage}: model '{need.model}' ({need.spec.path}) needs {memory} on {where} and fits "
                      f"no node type; the largest node is {largest.label()}{hint}")
    for need in needs:
        if need.stage in ("sft", "dpo") and need.fits:
            section: TrainStageConfig = getattr(config, need.stage)
            capacity = sum(n.max_nodes * need.fits.get(n.name, 0) for n in nodes)
            if capacity < section.num_workers:
                errors.append(f"{need.stage}: {section.num_workers} workers of {need.gpus:g} GPU / {need.cpus:g} CPU "
                              f"but the cluster holds at most {capacity}")
    by_key = {n.model: n for n in needs}
    for group, members in colocation_groups(needs).items():
        gpus = sum(by_key[m].gpus for m in members)
        if gpus > 1 + 1e-9 and any(by_key[m].tp == 1 for m in members):
            errors.append(f"co-location group '{group}' ({', '.join(members)}) asks for {gpus:g} GPUs in one bundle")
    return errors


def plan_stage(config: CarevlConfig, stage: str, nodes: list[NodeType]) -> list[Need]:
    return [place(need, nodes, config) for need in stage_needs(config, stage)]


def check_placement(config: CarevlConfig, stage: str, cluster: str | None = None) -> list[Need]:
    """Fail fast when `stage` can never be placed: every model it loads must fit some node type of
    `cluster` / `planning.cluster` / the running Ray cluster / this machine (in that order).

    Raises PlacementError naming each model, its memory and the largest node; logs a warning for a
    vLLM model whose full batch at max length does not fit at its tensor-parallel degree (it runs,
    with fewer sequences in flight). Reads configs only: no weights are loaded.
    """
    nodes = node_types(config, cluster)
    needs = plan_stage(config, stage, nodes)
    errors = placement_errors(needs, nodes, config)
    if errors:
        raise PlacementError("placement check failed:\n  " + "\n  ".join(errors))
    for need in needs:
        if not need.full_batch_fits and need.footprint:
            log.warning("%s: model '%s' holds %.1f GB at batch %d x %d tokens, over its tensor_parallel_size %d "
                        "(needs %s); vLLM will run fewer sequences at once", stage, need.model,
                        need.footprint.total / GB, need.spec.resources.batch_size, need.spec.max_length,
                        need.tp, need.tp_needed or "more GPUs than a node has")
    return needs
