"""Sharded training (`<stage>.sharding: fsdp`): PyTorch FSDP2 through transformers' and accelerate's own
support, so that a 7B judge's optimizer state, gradients and weights (and DPO's frozen reference) are
split across the Ray Train workers instead of copied to each.

- `fsdp_fields` derives TRL's `fsdp` / `fsdp_config` from the stage; the user never writes them.
  Every decoder layer (and vision block) is its own FSDP unit, gathered for its forward and backward
  and freed after; checkpoints are sharded (one file per rank, which Ray Train's per-rank uploads
  merge into one checkpoint folder, and which a restarted group of any size reads back).
- TRL's DPOTrainer shards the reference model itself (`trl.models.utils.prepare_fsdp`, the whole
  model as one unit: gathered for its forward, sharded at rest).
- accelerate 1.16 turns FSDP on only for accelerator devices; on CPU workers it silently trains
  unsharded. PyTorch's FSDP2 runs on CPU with gloo, so `shardable` trainer classes switch accelerate's
  state to FSDP there: CPU-only clusters (and the CPU tests of this project) run the same sharded code
  path as GPUs.
- The final model is gathered into one full state dict on rank 0 (`full_state_dict`), saved in the
  usual `model/` folder format.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
from accelerate.state import PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

from carevl.config.stages import TrainStageConfig
from carevl.planning.placement import CHECKPOINTING_KEYS, recomputes_activations

def activation_checkpointing(trainer_cls_config: type, trainer: dict[str, Any]) -> bool:
    """Whether the stage recomputes activations: `activation_checkpointing` or its older alias
    `gradient_checkpointing` from `<stage>.trainer`, else the TRL config's default (True in TRL)."""
    defaults = {f.name: f.default for f in dataclasses.fields(trainer_cls_config)}
    return recomputes_activations(trainer, default=bool(defaults.get("gradient_checkpointing") or False))


def fsdp_fields(stage: TrainStageConfig, config_cls: type) -> dict[str, Any]:
    """TrainingArguments fields that shard a stage with FSDP2 ({} for `sharding: none`).

    Activation checkpointing, when the stage asks for it, is FSDP's own (applied per wrapped layer);
    the Trainer's per-layer checkpointing is turned off, as under FSDP it would gather every layer twice.
    """
    if stage.sharding == "none":
        return {}
    return {
        "fsdp": True,
        "fsdp_config": {
            "version": 2,
            "reshard_after_forward": True,              # ZeRO-3: a layer's weights live sharded between uses
            "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",  # the model's `_no_split_modules` (decoder layers)
            "state_dict_type": "SHARDED_STATE_DICT",
            "activation_checkpointing": activation_checkpointing(config_cls, stage.trainer),
        },
        "activation_checkpointing": False,
    }


def _enable_fsdp_on_cpu(trainer) -> None:
    """Switch a CPU trainer's accelerate state to FSDP with the plugin its arguments describe (the state
    accelerate would have built on GPUs); after that the Trainer, accelerate and TRL take their FSDP paths."""
    state = trainer.accelerator.state
    if state.distributed_type is not DistributedType.MULTI_CPU:
        raise RuntimeError(f"FSDP was configured but accelerate set up {state.distributed_type}, not FSDP")
    plugin = FullyShardedDataParallelPlugin(**trainer.args.fsdp_plugin_args)
    if state.mixed_precision != "no":
        plugin.set_mixed_precision(state.mixed_precision)
    state.distributed_type = DistributedType.FSDP
    state.fsdp_plugin = plugin
    # As accelerate does when it picks FSDP itself: every later AcceleratorState() copies PartialState's type.
    PartialState().distributed_type = DistributedType.FSDP
    trainer.is_fsdp_enabled = True


class _ShardOnCpu:
    """Mixin of a transformers Trainer: FSDP on CPU workers too (see the module docstring)."""

    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()
        if self.args.fsdp_plugin_args is not None and not self.is_fsdp_enabled:
            _enable_fsdp_on_cpu(self)


def shardable(trainer_cls: type) -> type:
    """`trainer_cls` (TRL's SFTTrainer / DPOTrainer) with FSDP honoured on CPU workers as well."""
    return type(trainer_cls.__name__, (_ShardOnCpu, trainer_cls), {"__module__": __name__})


def is_sharded(trainer) -> bool:
    return bool(getattr(trainer, "is_fsdp_enabled", False))


def full_state_dict(trainer) -> dict[str, torch.Tensor]:
    """The trained model's whole state dict on rank 0 ({} on the other ranks), in the dtype the model was
    loaded in (accelerate keeps fp32 master weights of the trainable parameters under mixed precision).
    Tied parameters (input embedding and output head) share one tensor again, as in the model, so that
    `save_pretrained` writes them once. A collective: every rank must call it."""
    state = trainer.accelerator.get_state_dict(trainer.model)
    model = trainer.accelerator.unwrap_model(trainer.model)
    dtype = model.config.dtype
    if isinstance(dtype, torch.dtype):
        state = {name: t.to(dtype) if t.is_floating_point() else t for name, t in state.items()}
    names_of: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names_of.setdefault(id(param), []).append(name)
    for first, *tied in (names for names in names_of.values() if names[0] in state):
        for name in tied:
            state[name] = state[first]
    return state
