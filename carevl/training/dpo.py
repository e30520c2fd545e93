"""DPO of the SFT judge on refined low-confidence pairs (paper 3.6), on Ray Train with TRL's DPOTrainer.

The policy and the reference both start from the SFT model; the reference is loaded separately and
kept frozen (paper 3.6). Each DPO row written by the refinement job becomes one preference example:
the judge prompt for the pair (in the pair's own A/B order, the order the critiques were sampled in),
the chosen critique and the rejected critique. Same checkpoint, resume and output layout as SFT.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from carevl.config import CarevlConfig
from carevl.data import io as dio
from carevl.judge_format import judge_messages
from carevl.training import common
from carevl.training.examples import DPO_FEATURES, load_examples, prepare_examples
from carevl.planning import check_placement

log = logging.getLogger(__name__)

NO_CRITIQUE = "empty_critique"
SAME_TEXT = "chosen_equals_rejected"


def _assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]


def dpo_example(row: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """(example, skip_reason) for one refinement DPO row (image attached later)."""
    chosen, rejected = (row.get("chosen") or "").strip(), (row.get("rejected") or "").strip()
    if not chosen or not rejected:
        return None, NO_CRITIQUE
    if chosen == rejected:
        return None, SAME_TEXT  # identical texts carry no preference signal
    return {
        "pair_id": row["pair_id"],
        "prompt": judge_messages(row["question"], row["response_a"], row["response_b"], with_image=True),
        "chosen": _assistant(chosen), "rejected": _assistant(rejected),
    }, None


def _frozen_reference(config: CarevlConfig, sft_model: str, device):
    from carevl.models.loading import load_vlm

    ref, _ = load_vlm(common.judge_spec(config, sft_model), config.paths.model_cache_dir(), device=device)
    ref.requires_grad_(False)
    return ref.eval()


def dpo_worker(loop_config: dict[str, Any]) -> None:
    """The Ray Train loop: runs on every worker."""
    import ray.train
    import ray.train.torch
    from ray.train.huggingface.transformers import RayTrainReportCallback, prepare_trainer
    from trl import DPOConfig, DPOTrainer

    config = CarevlConfig.model_validate(loop_config["config"])
    stage, sft_model = config.dpo, loop_config["sft_model"]
    paths = common.TrainPaths(Path(loop_config["root"]))
    scratch = paths.scratch / f"rank-{ray.train.get_context().get_world_rank()}"
    scratch.mkdir(parents=True, exist_ok=True)
    device = ray.train.torch.get_device()

    model, processor, vision_prefix = common.load_trainable_vlm(config, stage, sft_model, device=device)
    args = common.trl_args(DPOConfig, "dpo", stage.trainer,
                           **common.fixed_trainer_fields(stage, str(scratch / "hf"), config.seed))
    peft_config = common.lora_config(stage.lora, vision_prefix if stage.freeze_vision else None) \
        if stage.lora is not None else None
    trainer = DPOTrainer(model=model, ref_model=_frozen_reference(config, sft_model, device), args=args,
                         train_dataset=load_examples(paths.data), processing_class=processor,
                         peft_config=peft_config, callbacks=[RayTrainReportCallback()])
    trainer = prepare_trainer(trainer)
    resume = common.resume_checkpoint(scratch)
    trainer.train(resume_from_checkpoint=resume)
    common.report_final(trainer, processor, stage, scratch, resume)


def run_dpo(config: CarevlConfig, input_uri: str, sft_model: str, output: str) -> dict[str, Any]:
    """Train the SFT judge at `sft_model` with DPO on `input_uri` (refinement rows) into `output`."""
    from trl import DPOConfig

    from carevl.ray_utils import init_ray

    check_placement(config, "dpo")  # fail in seconds when a worker fits no node
    paths = common.TrainPaths.of(output)
    if common.is_complete(paths):
        log.info("DPO already complete in %s; nothing to do", paths.model)
        return common.load_summary(paths)
    model_dir = Path(sft_model).expanduser().resolve()
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"--model {sft_model}: no trained model there (config.json missing)")
    stage = config.dpo
    common.trl_args(DPOConfig, "dpo", stage.trainer,
                    **common.fixed_trainer_fields(stage, str(paths.scratch / "validate"), config.seed))
    clock = common.Stopwatch()
    # The refinement job's output folder holds the rows under dpo/ (next to critiques/).
    rows_uri = dio.join(input_uri, "dpo") if Path(input_uri, "dpo").is_dir() else input_uri
    data = prepare_examples(rows_uri, paths.data, dpo_example, DPO_FEATURES, config.curation.limits)
    log.info("DPO data: %s", data)
    init_ray(config)
    common.fit("dpo", stage, paths, dpo_worker,
               {"config": config.model_dump(mode="json"), "root": str(paths.root), "sft_model": str(model_dir)})
    summary = {"stage": "dpo", "input": input_uri, "base_model": str(model_dir), "data": data,
               "train_seconds": clock.seconds(), "config_hash": config.config_hash()}
    return common.publish_final(paths, "dpo", summary)
