"""SFT of the LVLM judge on high-confidence pairs (paper 3.3), on Ray Train with TRL's SFTTrainer.

The driver prepares the judge conversations once (`SFT_DIR/data`), validates TRL's SFTConfig from
`sft.trainer`, and starts a TorchTrainer whose workers each run an SFTTrainer (completion-only loss
on the verdict + explanation, vision encoder frozen, optional LoRA). Checkpoints go to Ray Train
storage every `save_steps`; a re-run resumes from the latest one. The final model lands in
`SFT_DIR/model`.
"""
from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any

from carevl.config import CarevlConfig
from carevl.training import common
from carevl.training.examples import SFT_FEATURES, load_examples, prepare_examples
from carevl.training.sft_data import sft_conversation
from carevl.planning import check_placement

log = logging.getLogger(__name__)


def sft_worker(loop_config: dict[str, Any]) -> None:
    """The Ray Train loop: runs on every worker."""
    import ray.train
    import ray.train.torch
    from ray.train.huggingface.transformers import RayTrainReportCallback, prepare_trainer
    from trl import SFTConfig, SFTTrainer

    config = CarevlConfig.model_validate(loop_config["config"])
    stage = config.sft
    paths = common.TrainPaths(Path(loop_config["root"]))
    rank = ray.train.get_context().get_world_rank()
    scratch = paths.scratch / f"rank-{rank}"
    scratch.mkdir(parents=True, exist_ok=True)

    model, processor, vision_prefix = common.load_trainable_vlm(
        config, stage, None, device=ray.train.torch.get_device())
    args = common.trl_args(SFTConfig, "sft", stage.trainer,
                           **common.fixed_trainer_fields(stage, str(scratch / "hf"), config.seed))
    peft_config = common.lora_config(stage.lora, vision_prefix if stage.freeze_vision else None) \
        if stage.lora is not None else None
    trainer = SFTTrainer(model=model, args=args, train_dataset=load_examples(paths.data),
                         processing_class=processor, peft_config=peft_config,
                         callbacks=[RayTrainReportCallback()])
    trainer = prepare_trainer(trainer)
    resume = common.resume_checkpoint(scratch)
    trainer.train(resume_from_checkpoint=resume)
    common.report_final(trainer, processor, stage, scratch, resume)


def run_sft(config: CarevlConfig, input_uri: str, output: str) -> dict[str, Any]:
    """Train the judge on `input_uri` (curated high-confidence pairs) into `output`; returns the summary."""
    from trl import SFTConfig

    from carevl.ray_utils import init_ray

    check_placement(config, "sft")  # fail in seconds when a worker fits no node
    paths = common.TrainPaths.of(output)
    if common.is_complete(paths):
        log.info("SFT already complete in %s; nothing to do", paths.model)
        return common.load_summary(paths)
    stage = config.sft
    # Fail on a bad `sft.trainer` key before any data or cluster work.
    common.trl_args(SFTConfig, "sft", stage.trainer,
                    **common.fixed_trainer_fields(stage, str(paths.scratch / "validate"), config.seed))
    clock = common.Stopwatch()
    data = prepare_examples(input_uri, paths.data, partial(sft_conversation, seed=config.seed),
                            SFT_FEATURES, config.curation.limits)
    log.info("SFT data: %s", data)
    init_ray(config)
    common.fit("sft", stage, paths, sft_worker,
                        {"config": config.model_dump(mode="json"), "root": str(paths.root)})
    summary = {"stage": "sft", "input": input_uri, "base_model": common.judge_spec(config).path,
               "data": data, "train_seconds": clock.seconds(), "config_hash": config.config_hash()}
    return common.publish_final(paths, "sft", summary)
