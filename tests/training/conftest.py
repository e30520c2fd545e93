"""Fixtures of the training tests: tiny curated pairs, fast Ray Train settings and checks on a trained
model folder (handed to tests as fixtures, since test folders are not importable packages)."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

MICRO = ["models.judge.path=tiny:vlm_micro"]


def stage_overrides(stage: str, **trainer) -> list[str]:
    """Small, fast Ray Train settings: 2 CPU workers, no bf16 autocast or checkpointing on CPU."""
    base = {"bf16": False, "gradient_checkpointing": False, "logging_steps": 1, **trainer}
    return [f"{stage}.num_workers=2"] + [f"{stage}.trainer.{k}={v}" for k, v in base.items()]


def micro_folder() -> Path:
    """Where the untrained micro LLaVA lives (built on first use)."""
    from carevl.config import load_config
    from carevl.models.loading import resolve_model_path
    from carevl.models.specs import judge_spec

    config = load_config(overrides=MICRO)
    return Path(resolve_model_path(judge_spec(config), config.paths.model_cache_dir())[0])


def _load(folder: Path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    return AutoModelForImageTextToText.from_pretrained(folder), AutoProcessor.from_pretrained(folder)


def assert_trained(base: Path, trained: Path) -> None:
    """Every language-side parameter tensor changed; every vision-encoder tensor is identical."""
    from carevl.training.freeze import vision_parameter_names

    before, _ = _load(base)
    after, _ = _load(trained)
    vision = vision_parameter_names(before)
    assert vision, "the model should have a vision encoder"
    old = dict(before.named_parameters())
    unchanged, changed_vision = [], []
    for name, param in after.named_parameters():
        same = torch.equal(param, old[name])
        if name in vision and not same:
            changed_vision.append(name)
        if name not in vision and same:
            unchanged.append(name)
    assert not changed_vision, f"frozen vision parameters changed: {changed_vision[:5]}"
    assert not unchanged, f"trainable parameters did not change: {unchanged[:5]}"


def assert_generates(folder: Path) -> str:
    """The saved model reloads with from_pretrained and generates new tokens for a judge prompt."""
    from PIL import Image

    from carevl.judge_format import judge_messages

    model, processor = _load(folder)
    text = processor.apply_chat_template(judge_messages("How many circles?", "Two.", "Three."),
                                         add_generation_prompt=True, tokenize=False)
    image = Image.new("RGB", (64, 64), "red")
    inputs = processor(text=[text], images=[image], return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1]:]
    assert new.numel() > 0
    return processor.decode(new, skip_special_tokens=True)


def write_dpo_rows(curated_pairs: Path, folder: Path) -> int:
    """Refinement-style rows under folder/dpo (`synthetic_pairs.write_synthetic_dpo_rows`)."""
    from carevl.training.synthetic_pairs import write_synthetic_dpo_rows

    return write_synthetic_dpo_rows(str(curated_pairs), str(folder))


def registered_checkpoints(run: Path) -> list[Path]:
    """TRL checkpoints (not the final model) that Ray Train has registered for `run` (its snapshot lists them)."""
    try:
        results = json.loads((run / "checkpoint_manager_snapshot.json").read_text())["checkpoint_results"]
    except (OSError, ValueError, KeyError):
        return []
    folders = [run / r["checkpoint_dir_name"] / "checkpoint" for r in results]
    return [f for f in folders if (f / "trainer_state.json").is_file()]


def train_workers(root_pid: int) -> list:
    """Ray Train worker processes among the descendants of `root_pid` (a job, or this test session)."""
    import psutil

    workers = []
    for child in psutil.Process(root_pid).children(recursive=True):
        try:
            if child.cmdline()[:1] and child.cmdline()[0].startswith("ray::RayTrainWorker"):
                workers.append(child)
        except psutil.Error:
            continue
    return workers


@pytest.fixture(scope="session")
def checks() -> SimpleNamespace:
    return SimpleNamespace(MICRO=MICRO, stage_overrides=stage_overrides, micro_folder=micro_folder,
                           assert_trained=assert_trained, assert_generates=assert_generates,
                           write_dpo_rows=write_dpo_rows, registered_checkpoints=registered_checkpoints,
                           train_workers=train_workers)


@pytest.fixture(scope="session")
def curated_pairs(tmp_path_factory) -> Path:
    """RUN_DIR with high/ and low/ PAIR_SCHEMA Parquet built from 12 synthetic items."""
    from carevl.training.synthetic_pairs import write_synthetic_pairs

    run = tmp_path_factory.mktemp("curated")
    counts = write_synthetic_pairs(str(run), 12, seed=0)
    assert counts["high"] > 8 and counts["low"] > 4
    return run
