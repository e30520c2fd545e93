"""Sharded (FSDP2) SFT and DPO on two Ray Train CPU workers (gloo) equal the unsharded (DDP) runs.

Each pair of runs sees the same data, seed and effective batch (2 workers x 4 rows); the sharded SFT run
also loses a training worker after its first (sharded) checkpoint and resumes from it. Tolerances: the
logged losses agree to a relative 1e-5 and every saved weight to 1e-5 absolute (the reductions differ
only in summation order: all-reduce against reduce-scatter; measured differences are about 1e-7).
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
import torch

from carevl.config import load_config
from carevl.training.dpo import run_dpo
from carevl.training.sft import run_sft

pytestmark = [pytest.mark.ray, pytest.mark.slow]
STEPS, SAVE_STEPS = 4, 2
LOSS_RTOL, WEIGHT_ATOL = 1e-5, 1e-5


def _config(checks, stage: str, sharding: str, **trainer):
    stage_trainer = dict(max_steps=STEPS, save_steps=SAVE_STEPS, per_device_train_batch_size=4, **trainer)
    return load_config(overrides=checks.MICRO + checks.stage_overrides(stage, **stage_trainer)
                       + [f"{stage}.sharding={sharding}", f"{stage}.max_failures=1"])


def _kill_a_worker_after_first_checkpoint(checks, run: Path, done: threading.Event, killed: list) -> None:
    while not done.is_set():
        workers = checks.train_workers(os.getpid()) if checks.registered_checkpoints(run) else []
        if workers:
            workers[-1].kill()
            killed.append(workers[-1].pid)
            return
        time.sleep(0.2)


def _sft_with_a_worker_killed(checks, config, pairs, out: Path) -> tuple[dict, list]:
    done, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_a_worker_after_first_checkpoint,
                              args=(checks, out / "checkpoints" / "sft", done, killed), daemon=True)
    killer.start()
    try:
        return run_sft(config, pairs, str(out)), killed
    finally:
        done.set()
        killer.join()


def _losses(summary: dict) -> list[float]:
    return [e["loss"] for e in summary["train_metrics"]["log_history"] if "loss" in e]


def _assert_same_training(sharded: dict, unsharded: dict, sharded_model: Path, unsharded_model: Path) -> None:
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText

    assert len(_losses(sharded)) == STEPS
    assert _losses(sharded) == pytest.approx(_losses(unsharded), rel=LOSS_RTOL)
    # The same files and tensor names (what from_pretrained and the vLLM weight rewrite read), and the same
    # weights once reloaded.
    assert sorted(p.name for p in sharded_model.iterdir()) == sorted(p.name for p in unsharded_model.iterdir())
    assert set(load_file(sharded_model / "model.safetensors")) == set(load_file(unsharded_model / "model.safetensors"))
    a = AutoModelForImageTextToText.from_pretrained(sharded_model).state_dict()
    b = AutoModelForImageTextToText.from_pretrained(unsharded_model).state_dict()
    assert a.keys() == b.keys()
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert worst <= WEIGHT_ATOL, worst


def _assert_checkpoints_sharded(checks, run: Path) -> None:
    """Every registered TRL checkpoint holds one model shard and one optimizer shard per rank (FSDP ran)."""
    checkpoints = checks.registered_checkpoints(run)
    assert checkpoints
    for checkpoint in checkpoints:
        for part in ("pytorch_model_fsdp_0", "optimizer_0"):
            assert sorted(p.name for p in (checkpoint / part).glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
        assert not (checkpoint / "model.safetensors").exists()


def test_sharded_sft_equals_unsharded_and_resumes_from_a_sharded_checkpoint(ray_local, checks, curated_pairs,
                                                                            tmp_path):
    pairs = str(curated_pairs / "high")
    unsharded = run_sft(_config(checks, "sft", "none", learning_rate=1e-3), pairs, str(tmp_path / "ddp"))
    sharded, killed = _sft_with_a_worker_killed(checks, _config(checks, "sft", "fsdp", learning_rate=1e-3), pairs,
                                                tmp_path / "fsdp")
    assert killed and sharded["resumed_from_step"] == SAVE_STEPS and sharded["global_step"] == STEPS
    _assert_checkpoints_sharded(checks, tmp_path / "fsdp" / "checkpoints" / "sft")
    _assert_same_training(sharded, unsharded, tmp_path / "fsdp" / "model", tmp_path / "ddp" / "model")
    checks.assert_trained(checks.micro_folder(), tmp_path / "fsdp" / "model")
    checks.assert_generates(tmp_path / "fsdp" / "model")


def test_sharded_dpo_equals_unsharded(ray_local, checks, curated_pairs, tmp_path):
    """The frozen reference is sharded too (TRL's own FSDP path for it); margins and weights match."""
    checks.write_dpo_rows(curated_pairs, tmp_path / "pairs")
    base = str(checks.micro_folder())
    runs = {mode: run_dpo(_config(checks, "dpo", mode, learning_rate=5e-4, beta=0.1), str(tmp_path / "pairs"),
                          base, str(tmp_path / mode)) for mode in ("none", "fsdp")}
    _assert_checkpoints_sharded(checks, tmp_path / "fsdp" / "checkpoints" / "dpo")
    _assert_same_training(runs["fsdp"], runs["none"], tmp_path / "fsdp" / "model", tmp_path / "none" / "model")
    margins = {mode: [e["rewards/margins"] for e in s["train_metrics"]["log_history"] if "rewards/margins" in e]
               for mode, s in runs.items()}
    assert margins["fsdp"] == pytest.approx(margins["none"], rel=1e-4, abs=1e-6)
    assert margins["fsdp"][-1] > margins["fsdp"][0]
    assert torch.isfinite(torch.tensor(_losses(runs["fsdp"]))).all()
