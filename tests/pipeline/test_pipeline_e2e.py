"""The whole pipeline end to end on a small synthetic set (tiny preset, local Ray), and its resume."""
from __future__ import annotations

import json
import os

import pytest

from carevl.config import load_config
from carevl.ledger import StaleRunError
from carevl.pipeline import MARKER, PipelineOptions, config_of, plan_stages, run_or_skip, run_pipeline, shared_ray
from carevl.progress import screen_width

SMALL = [
    "--set", "refine.num_samples=2",
    "--set", "sft.trainer.num_train_epochs=2",
    "--set", "evaluation.k=1",
]


@pytest.mark.ray
@pytest.mark.slow
def test_pipeline_runs_every_stage_then_skips_them(tmp_path, capsys):
    opts = PipelineOptions(run_dir=tmp_path / "run", config_args=SMALL, items=6, eval_items=4,
                           base_judge="judge", vl_rewardbench=None)
    with shared_ray(load_config()) as address:  # every stage job joins this one Ray instance
        assert os.environ["RAY_ADDRESS"] == address
        summary = run_pipeline(opts)
    assert "RAY_ADDRESS" not in os.environ or os.environ["RAY_ADDRESS"] != address
    cur = json.loads((opts.run_dir / "curation" / "summary.json").read_text())
    assert cur["input_rows"] == 6 and cur["rows_conserved"] is True
    assert cur["pairs"]["total"] == cur["pairs"]["high"] + cur["pairs"]["low"] > 0
    assert (opts.run_dir / "sft" / "model" / "config.json").is_file()
    assert "synthetic_base" in summary["evaluation"] and "synthetic_sft" in summary["evaluation"]
    for name in ("synthetic_base", "synthetic_sft"):
        assert 0.0 <= summary["evaluation"][name]["overall"] <= 1.0
    dpo_ran = summary["stage_seconds"]["train_dpo"] != "no DPO pairs"
    assert (opts.run_dir / "dpo" / "model" / "config.json").is_file() == dpo_ran
    _check_console(capsys.readouterr().out, opts, summary)
    # A second run finds every stage complete and redoes nothing.
    again = run_pipeline(opts)
    ran = [s for s, t in again["stage_seconds"].items() if t not in ("skipped", "no DPO pairs")]
    assert ran == []
    assert all((s.output / MARKER).is_file() for s in plan_stages(opts)
               if again["stage_seconds"][s.name] == "skipped")


def _check_console(out: str, opts: PipelineOptions, summary: dict) -> None:
    """Each stage shows a progress line now and then (at most one per 15 s, or 45 s unchanged) and one
    headline; every job's whole output is in its log; no line is wider than the screen."""
    lines = out.splitlines()
    assert all(len(line) <= screen_width() for line in lines), max(lines, key=len)
    for stage in plan_stages(opts):
        seconds = summary["stage_seconds"][stage.name]
        if not isinstance(seconds, float):
            continue
        mine = [line for line in lines if line.startswith((f"  {stage.name} ", f"✓ {stage.name} "))]
        assert [line for line in mine if line.startswith("✓")] != [], stage.name
        assert len(mine) <= 1 + seconds / 15 + 1, (stage.name, mine)
        assert (opts.run_dir / "logs" / f"{stage.name}.log").stat().st_size > 0
    curate = next(line for line in lines if line.startswith("✓ curate "))
    cur = json.loads((opts.run_dir / "curation" / "summary.json").read_text())
    assert f"{cur['pairs']['total']} pairs: {cur['pairs']['high']} high, {cur['pairs']['low']} low" in curate
    assert "INFO" not in out and "Loading weights" not in out   # Ray's and the loaders' chatter stay in the logs
    assert "streaming_executor" in (opts.run_dir / "logs" / "curate.log").read_text()


def test_a_finished_stage_is_skipped_only_with_the_same_settings(tmp_path):
    """The stage record holds the config the stage read: a `--set` that matters to it is refused with
    what changed, one that does not (a later stage's section) leaves it finished."""
    opts = PipelineOptions(run_dir=tmp_path / "run", config_args=SMALL, items=2, eval_items=2)
    stage = next(s for s in plan_stages(opts) if s.name == "prepare_models")
    logs = tmp_path / "logs"
    assert isinstance(run_or_skip(stage, config_of(SMALL), SMALL, logs), float)
    assert run_or_skip(stage, config_of(SMALL), SMALL, logs) == "skipped"
    later = SMALL + ["--set", "evaluation.k=2"]       # evaluation is not read by prepare_models
    assert run_or_skip(stage, config_of(later), later, logs) == "skipped"
    changed = SMALL + ["--set", "models.vlm.generation.max_new_tokens=9"]
    with pytest.raises(StaleRunError, match=r"config\.models\.vlm\.generation\.max_new_tokens: 96 -> 9"):
        run_or_skip(stage, config_of(changed), changed, logs)


def test_the_pipeline_job_takes_vl_rewardbench_as_an_option(tmp_path, capsys):
    """No benchmark path is assumed outside the repository, and the limit default is the library's."""
    from carevl.cli import parse_job_args, run_job
    from ray_jobs import pipeline as job

    args = parse_job_args(job.JOB, ["--output", str(tmp_path / "run")])
    assert args.extra.vl_rewardbench is None
    assert args.extra.vl_rewardbench_limit == PipelineOptions(run_dir=tmp_path, config_args=[]).vl_rewardbench_limit
    assert [s for s in plan_stages(PipelineOptions(run_dir=tmp_path, config_args=[])) if "vlrb" in s.name] == []
    with_file = plan_stages(PipelineOptions(run_dir=tmp_path, config_args=[], vl_rewardbench=tmp_path / "d.jsonl"))
    assert [s.args[s.args.index("--limit") + 1] for s in with_file if "vlrb" in s.name] == ["100"] * 3
    with pytest.raises(SystemExit) as exit_info:
        run_job(job.JOB, ["--output", str(tmp_path / "run"), "--vl-rewardbench", str(tmp_path / "missing.jsonl")])
    assert exit_info.value.code == 2 and "missing.jsonl" in capsys.readouterr().err
