"""The one training path of SFT (paper 3.3) and DPO (paper 3.6) on Ray Train with TRL.

A `Recipe` says what differs between the two: the config section, TRL's config and trainer classes,
the row -> example builder and the example features, and whether a frozen reference model is needed.
Everything else is shared:

- the driver (`run_training`) claims the output folder in the run ledger (input files, the stage's
  config, the starting model's files and the code version: a re-run with any of them changed is
  refused), validates TRL's config from `<stage>.trainer` before any work, streams the examples to
  disk, and starts a TorchTrainer;
- every worker (`train_worker`) loads the starting model with the vision encoder frozen (paper 4.3.2),
  adds LoRA adapters when configured, resumes from Ray Train's latest checkpoint, trains, and reports
  the final model, which the driver publishes to `<output>/model`.

DPO's reference is the frozen starting (SFT) model (paper 3.6): under LoRA it is the policy's own base
with the adapters disabled (TRL does that when no `ref_model` is given), otherwise a second copy.
"""
from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import ray.train
from ray.train.huggingface.transformers import RayTrainReportCallback, prepare_trainer

from carevl import ledger
from carevl.config import CarevlConfig
from carevl.models.loading import load_vlm
from carevl.models.specs import judge_spec
from carevl.planning import check_placement
from carevl.ray_utils import init_ray
from carevl.training import common, sharding
from carevl.training.devices import claim_worker_device
from carevl.training.examples import Builder, load_examples, prepare_examples

log = logging.getLogger(__name__)
RESTART_BUDGETS = ("max_failures", "max_preemption_failures")


@dataclass(frozen=True)
class Recipe:
    """What makes a training stage SFT or DPO."""

    name: str                       # config section, Ray Train run name, summary "stage"
    config_cls: type                # TRL's SFTConfig / DPOConfig
    trainer_cls: type               # TRL's SFTTrainer / DPOTrainer
    build: Builder                  # one input row -> (example without image, skip reason)
    features: datasets.Features
    frozen_reference: bool = False  # DPO: compare against the frozen starting model


def _reference(config: CarevlConfig, stage, start_model: str, device):
    ref, _ = load_vlm(judge_spec(config, start_model), config.paths.model_cache_dir(),
                      device=common.load_device(stage, device))
    ref.requires_grad_(False)
    return ref.eval()


def build_trainer(recipe: Recipe, config: CarevlConfig, start: str | None, dataset: datasets.Dataset,
                  output_dir: Path, device, callbacks: list | None = None):
    """TRL's trainer of `recipe`: the starting model (vision encoder frozen), TRL's config from
    `<stage>.trainer`, LoRA adapters when configured, and for DPO the frozen reference."""
    stage = getattr(config, recipe.name)
    model, processor, vision_prefix = common.load_trainable_vlm(config, stage, start, device=device)
    args = common.training_args(recipe.config_cls, recipe.name, stage, str(output_dir), config.seed)
    peft_config = common.lora_config(stage.lora, vision_prefix if stage.freeze_vision else None) \
        if stage.lora is not None else None
    extra = {}
    if recipe.frozen_reference:
        # With LoRA, TRL disables the adapters to get the reference: no second copy of the model.
        # Under FSDP, TRL shards it across the workers as well (`carevl.training.sharding`).
        extra["ref_model"] = None if peft_config is not None else _reference(config, stage, start, device)
    trainer_cls = recipe.trainer_cls if stage.sharding == "none" else sharding.shardable(recipe.trainer_cls)
    trainer = trainer_cls(model=model, args=args, train_dataset=dataset, processing_class=processor,
                          peft_config=peft_config, callbacks=callbacks or [], **extra)
    return trainer, processor


def train_worker(loop_config: dict[str, Any]) -> None:
    """The Ray Train loop of either stage: runs on every worker."""
    recipe: Recipe = loop_config["recipe"]
    config = CarevlConfig.model_validate(loop_config["config"])
    paths = common.TrainPaths(Path(loop_config["root"]))
    scratch = paths.scratch / f"rank-{ray.train.get_context().get_world_rank()}"
    # TRL's checkpoints of an earlier attempt on this node: the run resumes from Ray Train's copy instead.
    shutil.rmtree(scratch / "hf", ignore_errors=True)
    scratch.mkdir(parents=True, exist_ok=True)
    trainer, processor = build_trainer(recipe, config, loop_config["start_model"], load_examples(paths.data),
                                       scratch / "hf", claim_worker_device(), [RayTrainReportCallback()])
    stage = getattr(config, recipe.name)
    trainer = prepare_trainer(trainer)
    resume = common.resume_checkpoint(scratch)
    trainer.train(resume_from_checkpoint=resume)
    common.report_final(trainer, processor, stage, scratch, resume)


def run_fingerprint(config: CarevlConfig, recipe: Recipe, rows_uri: str, start_model: str | None) -> dict:
    """Input rows, starting model (files of a trained folder, or the backbone spec), the stage's section,
    seed, image rules and code version."""
    inputs: dict[str, Any] = {"rows": ledger.input_fingerprint(rows_uri)}
    if start_model is not None:
        inputs["start_model"] = ledger.input_fingerprint(start_model)
    # The failure budgets decide how often a run may restart, not what it learns: a re-run may change them.
    stage = getattr(config, recipe.name).model_dump(mode="json", exclude=set(RESTART_BUDGETS))
    settings = {recipe.name: stage, "seed": config.seed,
                "model": judge_spec(config, start_model).model_dump(exclude={"resources", "http"}),
                "limits": config.curation.limits.model_dump(),
                "allow_remote_images": config.curation.allow_remote_images}
    return ledger.run_fingerprint(inputs, settings)


def run_training(config: CarevlConfig, recipe: Recipe, rows_uri: str, output: str,
                 start_model: str | None = None, summary_extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train `recipe` on the rows at `rows_uri` from `start_model` (None: the judge backbone) into
    `output`; resumes a killed run, returns the summary at once when the run already finished."""
    check_placement(config, recipe.name)  # fail in seconds when a worker fits no node
    paths = common.TrainPaths.of(output)
    stage = getattr(config, recipe.name)
    # Fail on a bad `<stage>.trainer` key before any data or cluster work.
    common.training_args(recipe.config_cls, recipe.name, stage, str(paths.scratch / "validate"), config.seed)
    led = ledger.RunLedger(str(paths.root), recipe.name)
    led.claim(run_fingerprint(config, recipe, rows_uri, start_model))
    if led.is_complete() and (paths.model / common.FINAL_MARKER).is_file():
        log.info("%s already complete in %s; nothing to do", recipe.name.upper(), paths.model)
        return common.load_summary(paths)
    clock = common.Stopwatch()
    data = prepare_examples(rows_uri, paths.data, recipe.build, recipe.features, config.curation.limits,
                            allow_remote=config.curation.allow_remote_images)
    log.info("%s data: %s", recipe.name.upper(), data)
    init_ray(config)
    common.fit(recipe.name, stage, paths, train_worker,
               {"recipe": recipe, "config": config.model_dump(mode="json"), "root": str(paths.root),
                "start_model": start_model})
    summary = {"stage": recipe.name, **(summary_extra or {}), "data": data, "train_seconds": clock.seconds(),
               "config_hash": config.config_hash()}
    summary = common.publish_final(paths, recipe.name, summary)
    led.mark_complete({"global_step": summary["global_step"]})
    return summary


def print_summary(_args: Any, summary: dict[str, Any]) -> None:
    """What the training jobs print (`carevl.cli.Job.show`): the summary without the per-step log."""
    shown = {**summary, "train_metrics": {k: v for k, v in summary.get("train_metrics", {}).items()
                                          if k != "log_history"}}
    print(json.dumps(shown, indent=1))
