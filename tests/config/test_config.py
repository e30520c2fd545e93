"""The typed config: presets load, bad keys/types/tau fail at load naming the key and the file."""
from __future__ import annotations

from pathlib import Path

import pytest

from carevl.cli import Job, parse_job_args
from carevl.config import ConfigError, load_config, parse_override

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny.yaml"
PAPER = REPO / "configs" / "paper.yaml"


def test_presets_load_with_paper_values():
    tiny = load_config(TINY)
    assert tiny.preset == "tiny" and tiny.curation.effective_tau == len(tiny.curation.experts) - 1
    paper = load_config(PAPER)
    # paper 4.3: M = 5 experts, tau = M-1, m = 10, SFT lr 1e-5 x 3 epochs, DPO lr 1e-6 / beta 0.01 x 2 epochs.
    assert len(paper.curation.experts) == 5 and paper.curation.effective_tau == 4
    assert paper.refine.num_samples == 10
    assert paper.sft.trainer["learning_rate"] == 1e-5 and paper.sft.trainer["num_train_epochs"] == 3
    assert paper.dpo.trainer["learning_rate"] == 1e-6 and paper.dpo.trainer["beta"] == 0.01
    assert paper.dpo.trainer["num_train_epochs"] == 2
    for stage in (paper.sft, paper.dpo):  # effective batch 64 = workers x per-device x accumulation
        t = stage.trainer
        assert stage.num_workers * t["per_device_train_batch_size"] * t["gradient_accumulation_steps"] == 64
    assert paper.models[paper.curation.caption_model].path == "Qwen/Qwen2-VL-72B-Instruct"
    assert paper.models[paper.sft.judge_model].path == "Qwen/Qwen2-VL-7B-Instruct"
    assert len(paper.curation.candidates) == 10  # five LVLMs, greedy and temperature 1.0


def test_unknown_key_names_key_and_file(tmp_path):
    text = TINY.read_text().replace("seed: 0", "seed: 0\nsede: 1", 1)
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert "sede" in str(err.value) and str(bad) in str(err.value)


@pytest.mark.parametrize("override, key", [
    ("curation.strong_judge.bogus=1", "curation.strong_judge.bogus"),
    ("models.vlm.resources.batch_size=many", "models.vlm.resources.batch_size"),
    ("refine.num_samples=0", "refine.num_samples"),
])
def test_bad_override_names_key(override, key):
    with pytest.raises(ConfigError) as err:
        load_config(TINY, [override])
    assert key in str(err.value) and "tiny.yaml" in str(err.value)


@pytest.mark.parametrize("tau", [1, 2, 6])
def test_tau_must_exceed_half_of_m(tau):
    with pytest.raises(ConfigError, match="tau"):
        load_config(TINY, [f"curation.tau={tau}"])


def test_tau_boundary_accepted_with_three_experts():
    cfg = load_config(TINY, ["curation.experts=[rm_llama,rm_qwen2,rm_gemma2]", "curation.tau=2"])
    assert cfg.curation.effective_tau == 2


@pytest.mark.parametrize("override, message", [
    ("curation.experts=[rm_llama,nope,rm_qwen2]", "'nope' is not defined"),
    ("curation.caption_model=rm_llama", "kind 'reward'"),
    ("curation.experts=[rm_llama,rm_llama,rm_qwen2]", "only once"),
    ("curation.strong_judge.backend=openai", "needs strong_judge.model"),
    ("models.vlm.resources.concurrency=[3,1]", "concurrency"),
])
def test_cross_field_checks(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TINY, [override])


def test_overrides_keep_yaml_types_and_apply_in_order():
    assert parse_override("a.b=[1, 2]") == ("a.b", [1, 2])
    assert parse_override("sft.trainer.learning_rate=2e-3") == ("sft.trainer.learning_rate", 0.002)
    cfg = load_config(TINY, ["curation.tau=5", "curation.tau=4", "models.vlm.resources.concurrency=[1,3]"])
    assert cfg.curation.tau == 4 and cfg.models["vlm"].resources.concurrency == (1, 3)
    assert cfg.config_hash() != load_config(TINY).config_hash()


def test_common_cli_parses_shared_flags_and_exits_2_on_bad_config(capsys):
    job = Job("t", lambda a: None)
    args = parse_job_args(job, ["--set", "seed=7", "--input", "in", "--output", "out"])
    assert (args.config.seed, args.input, args.output) == (7, "in", "out")
    with pytest.raises(SystemExit) as exc:
        parse_job_args(job, ["--set", "nonsense.key=1"])
    assert exc.value.code == 2 and "nonsense" in capsys.readouterr().err
