"""The whole CAREVL flow in one run folder (Algorithm 1 end to end):

    models -> synthetic items -> curate (paper 3.1-3.2) -> audit the labels against the synthetic gold
           -> train_sft (3.3) -> refine (3.4-3.5) -> train_dpo (3.6) -> evaluate (4.1), before and after
              each training stage

Each stage runs as its own job process (`python -m ray_jobs.<stage>`), exactly as a user would chain
them, with the same `--config` / `--set` flags. Each stage's output folder keeps a run-ledger record
(`_COMPLETE`, `carevl.ledger`) of the stage's fingerprint: its job and arguments, the config sections
it and the stages before it read, and the code version. A finished stage with the same fingerprint is
skipped, so a killed pipeline re-run picks up where it stopped (each job also resumes internally); a
stage whose fingerprint changed (a `--set` that matters to it, say) is refused with what changed.
Inside `shared_ray`, the jobs join one Ray instance instead of each starting its own.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import ray

from carevl import ledger
from carevl.config import CarevlConfig, load_config
from carevl.progress import StageProgress
from carevl.ray_utils import init_ray
from carevl.run_report import collect_summary, read_json, stage_headline

MARKER = "_COMPLETE"
# Config sections each job reads, in pipeline order: a stage's fingerprint holds its own and all earlier
# ones, so a change upstream reaches every stage that consumes its output.
STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    "ray_jobs.prepare_models": ("models",),
    "ray_jobs.synth_data": (),
    "ray_jobs.curate": ("seed", "models", "curation"),
    "ray_jobs.audit": ("seed", "models", "curation"),
    "ray_jobs.train_sft": ("seed", "models", "curation", "sft"),
    "ray_jobs.refine": ("seed", "models", "curation", "sft", "refine"),
    "ray_jobs.train_dpo": ("seed", "models", "curation", "sft", "refine", "dpo"),
    "ray_jobs.evaluate": ("seed", "models", "curation", "sft", "refine", "dpo", "evaluation"),
}


@dataclass
class Stage:
    """One job of the pipeline: its module, arguments, and the folder whose marker says it is done."""

    name: str
    module: str
    output: Path
    args: list[str] = field(default_factory=list)


@dataclass
class PipelineOptions:
    run_dir: Path
    config_args: list[str]          # --config FILE and --set k=v pairs, passed to every job
    items: int = 40
    eval_items: int = 64
    seed: int = 0
    judge_accuracy: float = 0.75    # how often the synthetic strong judge's shipped verdict is right
    base_judge: str = "vlm"         # the untrained judge: a key in `models`, evaluated before training
    vl_rewardbench: Path | None = None
    vl_rewardbench_limit: int = 100


@contextmanager
def shared_ray(config) -> Iterator[str]:
    """Start (or join) Ray once and point every stage job at it through RAY_ADDRESS.

    Stage jobs then connect in well under a second instead of each starting a local instance; their
    actors still end with them. Ray is shut down on exit only if it was started here.
    """
    started = not ray.is_initialized()
    init_ray(config)
    previous = os.environ.get("RAY_ADDRESS")
    os.environ["RAY_ADDRESS"] = address = ray.get_runtime_context().gcs_address
    try:
        yield address
    finally:
        if previous is None:
            os.environ.pop("RAY_ADDRESS", None)
        else:
            os.environ["RAY_ADDRESS"] = previous
        if started:
            ray.shutdown()


def plan_stages(opts: PipelineOptions) -> list[Stage]:
    """The ordered stages with their inputs and outputs inside the run folder."""
    run = opts.run_dir
    data, cur = run / "data", run / "curation"
    sft_model, dpo_model = run / "sft" / "model", run / "dpo" / "model"
    stages = [
        Stage("prepare_models", "ray_jobs.prepare_models", run / "models"),
        Stage("synth_data", "ray_jobs.synth_data", data / "items",
              ["--items", str(opts.items), "--seed", str(opts.seed), "--judge-accuracy", str(opts.judge_accuracy)]),
        Stage("synth_eval", "ray_jobs.synth_data", data / "eval",
              ["--eval-pairs", str(opts.eval_items), "--seed", str(opts.seed + 1)]),
        Stage("curate", "ray_jobs.curate", cur, ["--input", str(data / "items")]),
        Stage("audit", "ray_jobs.audit", run / "audit", ["--run", str(cur), "--gold", str(data / "items")]),
        Stage("train_sft", "ray_jobs.train_sft", run / "sft", ["--input", str(cur / "high")]),
        Stage("refine", "ray_jobs.refine", run / "refine",
              ["--input", str(cur / "low"), "--model", str(sft_model)]),
        Stage("train_dpo", "ray_jobs.train_dpo", run / "dpo",
              ["--input", str(run / "refine"), "--model", str(sft_model)]),
    ]
    judges = {"base": opts.base_judge, "sft": str(sft_model), "dpo": str(dpo_model)}
    for label, model in judges.items():
        judge_args = ["--judge", model]
        stages.append(Stage(f"eval_synthetic_{label}", "ray_jobs.evaluate", run / "eval" / f"synthetic_{label}",
                            ["--benchmark", "synthetic", "--input", str(data / "eval"), *judge_args]))
        if opts.vl_rewardbench is not None:
            stages.append(Stage(
                f"eval_vlrb_{label}", "ray_jobs.evaluate", run / "eval" / f"vl_rewardbench_{label}",
                ["--benchmark", "vl_rewardbench", "--input", str(opts.vl_rewardbench), *judge_args,
                 "--limit", str(opts.vl_rewardbench_limit)]))
    return stages


def no_dpo_rows(run: Path) -> bool:
    """True when refinement finished but every low-confidence pair was skipped (no correct critique)."""
    summary = read_json(run / "refine" / "summary.json")
    return bool(summary) and summary.get("dpo_rows", 0) == 0


def trained_judge(run: Path) -> Path:
    """The judge to serve: the DPO model, or the SFT model when DPO had nothing to train on."""
    dpo = run / "dpo" / "model"
    return dpo if dpo.is_dir() else run / "sft" / "model"


def config_of(config_args: list[str]) -> CarevlConfig:
    """The effective config the stage jobs load from `--config FILE --set k=v ...`."""
    path = config_args[config_args.index("--config") + 1] if "--config" in config_args else None
    return load_config(path, [config_args[i + 1] for i, a in enumerate(config_args) if a == "--set"])


def stage_fingerprint(stage: Stage, config: CarevlConfig) -> dict:
    """The job, its arguments, the config sections it (and every stage before it) reads, the code."""
    tree = config.model_dump(mode="json")
    sections = {name: tree[name] for name in STAGE_SECTIONS[stage.module]}
    return ledger.run_fingerprint({}, {"module": stage.module, "args": stage.args, **sections})


def stage_ledger(stage: Stage) -> ledger.RunLedger:
    return ledger.RunLedger(str(stage.output), stage.name, record=MARKER)


FAILURE_TAIL = 20  # lines of a failed stage's log shown on the console


def run_stage(stage: Stage, config_args: list[str], log_dir: Path) -> float:
    """Run one job process with its whole output in `<log_dir>/<stage>.log` and a progress line on the
    console (`carevl.progress`), then the stage's headline; returns its seconds. A failed stage shows
    the end of its log."""
    cmd = [sys.executable, "-m", stage.module, *config_args, "--output", str(stage.output), *stage.args]
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{stage.name}.log"
    progress = StageProgress(stage.name)
    with open(log_path, "w") as log:
        log.write(f"$ {' '.join(cmd)}\n")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            progress.feed(line)
        code = proc.wait()
    if code != 0:
        progress.done(f"failed with exit code {code}; the end of {log_path}:")
        print("".join(log_path.read_text().splitlines(keepends=True)[-FAILURE_TAIL:]), end="", flush=True)
        raise RuntimeError(f"stage {stage.name} failed with exit code {code}; log: {log_path}")
    return progress.done(stage_headline(stage.name, stage.output))


def run_or_skip(stage: Stage, config: CarevlConfig, config_args: list[str], log_dir: Path) -> float | str:
    """Skip a stage finished with the same fingerprint, refuse one made with another, else run it."""
    fingerprint, led = stage_fingerprint(stage, config), stage_ledger(stage)
    if led.is_complete(fingerprint):
        print(f"✓ {stage.name}: already complete, skipped", flush=True)
        return "skipped"
    led.claim(fingerprint)  # raises StaleRunError naming what changed
    seconds = run_stage(stage, config_args, log_dir)
    led.mark_complete({"seconds": round(seconds, 1)})
    return round(seconds, 1)


def run_pipeline(opts: PipelineOptions) -> dict:
    """Run every stage not yet complete, then return (and write) the run summary."""
    opts.run_dir.mkdir(parents=True, exist_ok=True)
    config = config_of(opts.config_args)
    timings: dict[str, float | str] = {}
    for stage in plan_stages(opts):
        if stage.name in ("train_dpo", "eval_synthetic_dpo", "eval_vlrb_dpo") and no_dpo_rows(opts.run_dir):
            print(f"- {stage.name}: skipped, refinement built no DPO pairs (see refine/summary.json)", flush=True)
            timings[stage.name] = "no DPO pairs"
            continue
        try:
            timings[stage.name] = run_or_skip(stage, config, opts.config_args, opts.run_dir / "logs")
        except ledger.StaleRunError as exc:
            raise ledger.StaleRunError(f"{exc}. To redo the whole pipeline with the new settings, delete "
                                       f"{opts.run_dir} or choose another --output") from None
    summary = collect_summary(opts.run_dir)
    summary["stage_seconds"] = timings
    (opts.run_dir / "pipeline_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary
