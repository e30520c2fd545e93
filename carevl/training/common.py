"""What SFT and DPO share: TRL config pass-through, model set-up, Ray Train wiring, checkpoints.

Layout of a training output folder (SFT_DIR or DPO_DIR):

    _run.json      the run ledger (`carevl.ledger`): input and config fingerprint, code version, completion
    data/          the training examples, streamed once by the driver to a `datasets` folder
    checkpoints/   Ray Train storage: <name>/checkpoint_*/checkpoint/ holds TRL's checkpoint-N
    scratch/       per-rank TRL output_dir while training (removed at the end)
    model/         the final model, loadable with AutoModelForImageTextToText / AutoProcessor
    summary.json   counts, metrics, timings, config hash

The folder must be on storage every training worker can read (a local disk on one machine, or a
shared filesystem), as Ray Train's `storage_path` requires for multi-node runs anyway.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import ray.train
from peft import LoraConfig
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.huggingface.transformers import RayTrainReportCallback
from ray.train.torch import TorchTrainer

from carevl.config import CarevlConfig, ConfigError, LoraSpec, TrainStageConfig
from carevl.models.loading import load_vlm
from carevl.models.specs import judge_spec
from carevl.models.vllm_weights import rewrite_for_vllm
from carevl.training import sharding
from carevl.training.devices import WorkerDeviceTorchConfig, cuda_usable
from carevl.training.freeze import freeze_vision, vision_parameter_names

FINAL_MARKER = "carevl_training.json"   # written into model/ last: its presence means "complete"
FINAL_DIR_NAME = "final_model"          # Ray checkpoint dir name of the final model
TRAINING_LOG = "training_log.json"      # written next to the final model
SHARDING_KEYS = ("fsdp", "fsdp_config", "deepspeed")


@dataclasses.dataclass
class TrainPaths:
    """Where one training run keeps its data, checkpoints and final model."""

    root: Path

    @classmethod
    def of(cls, output: str) -> "TrainPaths":
        if "://" in output and not output.startswith("file://"):
            raise ValueError(f"training output must be a filesystem path (local or shared), got {output}")
        return cls(Path(output.removeprefix("file://")).expanduser().resolve())

    data = property(lambda self: self.root / "data")
    checkpoints = property(lambda self: self.root / "checkpoints")
    scratch = property(lambda self: self.root / "scratch")
    model = property(lambda self: self.root / "model")
    summary = property(lambda self: self.root / "summary.json")


# ------------------------------------------------------------------------------------------ config

def trl_args(cls: type, section: str, trainer: dict[str, Any], **fixed: Any):
    """Build TRL's SFTConfig / DPOConfig from the config's `<section>.trainer` mapping.

    Keys pass through unchanged; a key that is not a field of `cls`, one the job sets itself (`fixed`),
    or a sharding key (`<section>.sharding` decides those) is a ConfigError naming
    `<section>.trainer.<key>`. Invalid values surface TRL's message.
    """
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    for key in sorted(trainer):
        if key not in names:
            raise ConfigError(f"{section}.trainer.{key}: not a field of TRL's {cls.__name__}")
        if key in SHARDING_KEYS:
            raise ConfigError(f"{section}.trainer.{key}: set through {section}.sharding, remove it from the trainer")
        if key in fixed:
            raise ConfigError(f"{section}.trainer.{key}: set by the job, remove it from the config")
    try:
        return cls(**trainer, **fixed)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{section}.trainer: {exc}") from None


def fixed_trainer_fields(stage: TrainStageConfig, output_dir: str, seed: int) -> dict[str, Any]:
    """Fields the job owns: the scratch output dir, the device and the seed default.

    The device is the CPU unless the stage asks for GPUs *and* this process can use CUDA: a worker on
    a node whose GPUs are only a Ray resource trains on its CPU (`carevl.training.devices`).
    """
    fixed: dict[str, Any] = {"output_dir": output_dir, "use_cpu": not (stage.use_gpu and cuda_usable())}
    if "seed" not in stage.trainer:
        fixed["seed"] = seed
    return fixed


def training_args(cls: type, section: str, stage: TrainStageConfig, output_dir: str, seed: int):
    """TRL's config of a stage: `<section>.trainer` passed through, the fields the job owns, and with
    sharding the FSDP fields derived from `<section>.sharding` (which take over activation checkpointing)."""
    trainer, fixed = dict(stage.trainer), fixed_trainer_fields(stage, output_dir, seed)
    if stage.sharding != "none":
        fixed.update(sharding.fsdp_fields(stage, cls))
        for key in sharding.CHECKPOINTING_KEYS:
            trainer.pop(key, None)
    return trl_args(cls, section, trainer, **fixed)


def lora_config(spec: LoraSpec, exclude_prefix: str | None):
    """A PEFT LoraConfig for the language side; modules under `exclude_prefix` (the frozen vision
    encoder) get no adapters."""
    exclude = rf"^{re.escape(exclude_prefix)}\..*" if exclude_prefix else None
    return LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                      target_modules=spec.target_modules, exclude_modules=exclude, task_type="CAUSAL_LM")


# --------------------------------------------------------------------------------------- models

def load_device(stage: TrainStageConfig, device):
    """Where a worker loads the models: its compute device, or the CPU under sharding (FSDP then moves
    each worker's shard to the device, so no GPU ever holds a whole copy)."""
    return device if stage.sharding == "none" else "cpu"


def load_trainable_vlm(config: CarevlConfig, stage: TrainStageConfig, path: str | Path | None, device):
    """(model, processor, vision_prefix): the judge backbone (or a trained folder) ready to train,
    with the vision encoder frozen when the stage says so (paper 4.3.2)."""
    model, processor = load_vlm(judge_spec(config, path), config.paths.model_cache_dir(),
                                device=load_device(stage, device))
    names = sorted(vision_parameter_names(model))
    prefix = os.path.commonprefix(names).rsplit(".", 1)[0] if names else None
    if stage.freeze_vision:
        freeze_vision(model)
    model.train()
    return model, processor, prefix


def save_judge(model, processor, out_dir: Path, state_dict: dict | None = None) -> None:
    """Save a judge so that both transformers' `from_pretrained` and vLLM's loader read it (weight names
    in vLLM's spelling, `carevl.models.vllm_weights`); `state_dict`: the gathered weights of a sharded model."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, state_dict=state_dict)
    processor.save_pretrained(out_dir)
    rewrite_for_vllm(out_dir)


def save_final_model(trainer, processor, out_dir: Path, merge_lora: bool, resumed_from: str | None,
                     state_dict: dict | None = None) -> None:
    """Save the trained model (LoRA adapters merged unless `merge_lora` is False; `state_dict`: the
    gathered weights of a sharded model), its processor and the training log (with the checkpoint this
    run resumed from, if any)."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(model, "merge_and_unload") and merge_lora:
        model = model.merge_and_unload()
    save_judge(model, processor, out_dir, state_dict)
    resumed_step = None
    if resumed_from is not None:
        resumed_step = json.loads((Path(resumed_from) / "trainer_state.json").read_text())["global_step"]
    record = {"global_step": trainer.state.global_step, "resumed_from_step": resumed_step,
              "log_history": [dict(entry) for entry in trainer.state.log_history]}
    (out_dir / TRAINING_LOG).write_text(json.dumps(record, indent=1))


# ---------------------------------------------------------------------------------- Ray Train

def resume_checkpoint(scratch: Path) -> str | None:
    """The TRL checkpoint to resume from: Ray Train's latest reported checkpoint, copied locally.

    Returns None on a fresh run. Called inside the train function on every rank.
    """
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    local = scratch / "restored"
    if local.exists():
        shutil.rmtree(local)
    checkpoint.to_directory(str(local))
    hf_dir = local / RayTrainReportCallback.CHECKPOINT_NAME
    return str(hf_dir) if hf_dir.is_dir() else None


def report_final(trainer, processor, stage: TrainStageConfig, scratch: Path, resumed_from: str | None) -> None:
    """Rank 0 saves the final model and reports it to Ray Train as the run's last checkpoint;
    every rank calls report (Ray Train needs all ranks to report the same number of times). A sharded
    model is first gathered to rank 0, with every rank taking part."""
    rank = ray.train.get_context().get_world_rank()
    state_dict = sharding.full_state_dict(trainer) if sharding.is_sharded(trainer) else None
    if rank != 0:
        ray.train.report({"final": 1}, checkpoint=None, checkpoint_dir_name=FINAL_DIR_NAME)
        return
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        merge = stage.lora.merge if stage.lora is not None else True
        save_final_model(trainer, processor, Path(tmp), merge_lora=merge, resumed_from=resumed_from,
                         state_dict=state_dict)
        metrics = {"final": 1, "global_step": trainer.state.global_step}
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp),
                         checkpoint_dir_name=FINAL_DIR_NAME)


def run_config(name: str, stage: TrainStageConfig, paths: TrainPaths) -> RunConfig:
    """Ray Train's RunConfig of a stage: storage in the output folder, checkpoints kept, failure budgets."""
    keep = stage.trainer.get("save_total_limit")
    return RunConfig(
        name=name, storage_path=str(paths.checkpoints),
        # One more than TRL keeps locally, so the final-model checkpoint never evicts the last step.
        checkpoint_config=CheckpointConfig(num_to_keep=None if keep is None else int(keep) + 1),
        failure_config=FailureConfig(max_failures=stage.max_failures,
                                     max_preemption_failures=stage.max_preemption_failures),
    )


def fit(name: str, stage: TrainStageConfig, paths: TrainPaths, worker: Callable[[dict], None],
        loop_config: dict[str, Any]) -> None:
    """Run `worker` on Ray Train workers (ScalingConfig from the stage) until it reports the final model.

    A worker or node lost mid-run restarts the worker group, up to the stage's `max_failures` (and
    `max_preemption_failures` for nodes drained for preemption); the new workers resume from the
    latest checkpoint reported (TRL saves every `trainer.save_steps`). A re-run with the same output
    folder resumes the same Ray Train run (storage_path + name) the same way. When the final model was
    already reported (a kill between training and publishing), nothing is trained again.
    """
    if final_checkpoint(paths, name) is not None:
        return
    trainer = TorchTrainer(
        worker,
        train_loop_config=loop_config,
        torch_config=WorkerDeviceTorchConfig(),
        scaling_config=ScalingConfig(num_workers=stage.num_workers, use_gpu=stage.use_gpu,
                                     resources_per_worker=dict(stage.resources_per_worker)),
        run_config=run_config(name, stage, paths),
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error


def final_checkpoint(paths: TrainPaths, name: str) -> Path | None:
    """The final-model checkpoint of run `name` in Ray Train storage, if Ray Train registered it
    (a folder copied only partly before a kill is not listed in the run's snapshot)."""
    folder = paths.checkpoints / name / FINAL_DIR_NAME
    snapshot = paths.checkpoints / name / "checkpoint_manager_snapshot.json"
    try:
        results = json.loads(snapshot.read_text()).get("checkpoint_results", [])
    except (OSError, ValueError):
        return None
    registered = any(r.get("checkpoint_dir_name") == FINAL_DIR_NAME for r in results)
    return folder if registered and (folder / TRAINING_LOG).is_file() else None


def publish_final(paths: TrainPaths, name: str, summary: dict[str, Any]) -> dict[str, Any]:
    """Copy the run's final checkpoint to `model/` (via a temporary folder and a rename, with the
    completion marker written last) and write `summary.json`."""
    source = final_checkpoint(paths, name)
    if source is None:
        raise RuntimeError(f"training finished without a final model in {paths.checkpoints / name}")
    tmp = paths.root / f".model.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(source, tmp)
    record = json.loads((tmp / TRAINING_LOG).read_text())
    summary = {**summary, "global_step": record["global_step"], "resumed_from_step": record["resumed_from_step"],
               "train_metrics": training_metrics(record["log_history"])}
    (tmp / FINAL_MARKER).write_text(json.dumps(summary, indent=1))
    if paths.model.exists():
        shutil.rmtree(paths.model)
    tmp.rename(paths.model)
    paths.summary.write_text(json.dumps(summary, indent=1))
    shutil.rmtree(paths.scratch, ignore_errors=True)
    return summary


def training_metrics(log_history: list[dict[str, Any]]) -> dict[str, Any]:
    """First/last logged values of every metric, plus the final summary entry TRL writes."""
    first: dict[str, Any] = {}
    last: dict[str, Any] = {}
    for entry in log_history:
        for key, value in entry.items():
            if isinstance(value, (int, float)):
                first.setdefault(key, value)
                last[key] = value
    return {"first": first, "last": last, "log_history": log_history}


def load_summary(paths: TrainPaths) -> dict[str, Any]:
    return json.loads(paths.summary.read_text()) if paths.summary.is_file() else {}


class Stopwatch:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    def seconds(self) -> float:
        return round(time.perf_counter() - self.start, 3)
