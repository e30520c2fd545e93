"""SFT of the LVLM judge on high-confidence pairs (paper 3.3), on Ray Train with TRL's SFTTrainer.

The judge conversations come from `sft_data.sft_conversation` (completion-only loss on the verdict and
explanation); the training path itself (checkpoints, resume, LoRA, the run ledger) is the one shared
with DPO in `carevl.training.run`. The final model lands in `SFT_DIR/model`.
"""
from __future__ import annotations

from functools import partial
from typing import Any

from trl import SFTConfig, SFTTrainer

from carevl.config import CarevlConfig
from carevl.models.specs import judge_spec
from carevl.training.examples import SFT_FEATURES
from carevl.training.run import Recipe, run_training
from carevl.training.sft_data import sft_conversation


def sft_recipe(config: CarevlConfig) -> Recipe:
    build = partial(sft_conversation, seed=config.seed, both_orders=config.sft.both_orders)
    return Recipe("sft", SFTConfig, SFTTrainer, build, SFT_FEATURES)


def run_sft(config: CarevlConfig, input_uri: str, output: str) -> dict[str, Any]:
    """Train the judge on `input_uri` (curated high-confidence pairs) into `output`; returns the summary."""
    return run_training(config, sft_recipe(config), input_uri, output,
                        summary_extra={"input": input_uri, "base_model": judge_spec(config).path})
