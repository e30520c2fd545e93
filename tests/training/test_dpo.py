"""DPO through Ray Train with 2 CPU workers: reference = the frozen starting model, margins rise."""
from __future__ import annotations

import math

import pytest

from carevl.config import load_config
from carevl.judge_format import format_judgement
from carevl.ledger import StaleRunError
from carevl.training import run as run_module
from carevl.training.dpo import dpo_example, run_dpo


def test_dpo_example_skips_empty_and_identical_critiques():
    row = {"pair_id": "p", "question": "q", "response_a": "a", "response_b": "b"}
    assert dpo_example({**row, "chosen": "Verdict: A", "rejected": ""}) == (None, "empty_critique")
    assert dpo_example({**row, "chosen": "Verdict: A", "rejected": "Verdict: A"}) == (None, "chosen_equals_rejected")
    example, reason = dpo_example({**row, "chosen": "Verdict: A", "rejected": "Verdict: B"})
    assert reason is None and example["chosen"][0]["role"] == "assistant"


def test_both_orders_teach_the_same_preference_with_the_answers_swapped():
    row = {"pair_id": "p", "question": "q", "response_a": "a red circle", "response_b": "a blue square"}
    chosen = format_judgement("A", "Answer A names the red circle; Answer B invents a square.")
    rejected = format_judgement("B", "Answer B is shorter.")
    (plain, swapped), reason = dpo_example({**row, "chosen": chosen, "rejected": rejected}, both_orders=True)
    assert reason is None and (plain["swapped"], swapped["swapped"]) == (False, True)
    assert plain["chosen"][0]["content"][0]["text"] == chosen
    text = lambda example, key: example[key][0]["content"][0]["text"]  # noqa: E731
    prompt = lambda example: example["prompt"][1]["content"][-1]["text"]  # noqa: E731
    # The swapped prompt shows the blue square first; the chosen critique still prefers the red circle.
    assert prompt(swapped).index("a blue square") < prompt(swapped).index("a red circle")
    assert text(swapped, "chosen") == format_judgement("B", "Answer B names the red circle; Answer A invents a square.")
    assert text(swapped, "rejected") == format_judgement("A", "Answer A is shorter.")
    single, _ = dpo_example({**row, "chosen": chosen, "rejected": rejected})
    assert single == plain


@pytest.mark.ray
@pytest.mark.slow
def test_dpo_raises_reward_margin_and_keeps_vision_frozen(ray_local, checks, curated_pairs, tmp_path):
    n = checks.write_dpo_rows(curated_pairs, tmp_path / "pairs")
    config = load_config(overrides=checks.MICRO + checks.stage_overrides("dpo", max_steps=4, save_steps=2,
                                                           learning_rate=5e-4, beta=0.1))
    base = checks.micro_folder()
    summary = run_dpo(config, str(tmp_path / "pairs"), str(base), str(tmp_path / "dpo"))
    assert summary["data"]["examples"] == n and summary["global_step"] == 4
    history = [e for e in summary["train_metrics"]["log_history"] if "rewards/margins" in e]
    assert all(math.isfinite(e["loss"]) for e in history)
    assert history[0]["rewards/margins"] < history[-1]["rewards/margins"]
    assert history[-1]["rewards/margins"] > 0
    checks.assert_trained(base, tmp_path / "dpo" / "model")
    checks.assert_generates(tmp_path / "dpo" / "model")

    # The same run again is complete: nothing is trained. Changed config or input is refused, not reused.
    assert run_dpo(config, str(tmp_path / "pairs"), str(base), str(tmp_path / "dpo")) == summary
    changed = load_config(overrides=checks.MICRO + checks.stage_overrides("dpo", max_steps=4, save_steps=2,
                                                            learning_rate=5e-4, beta=0.2))
    with pytest.raises(StaleRunError, match=r"config\.dpo\.trainer\.beta: 0\.1 -> 0\.2"):
        run_dpo(changed, str(tmp_path / "pairs"), str(base), str(tmp_path / "dpo"))
    checks.write_dpo_rows(curated_pairs, tmp_path / "more")
    (tmp_path / "more" / "dpo" / "part-00000.parquet").rename(tmp_path / "pairs" / "dpo" / "part-00001.parquet")
    with pytest.raises(StaleRunError, match=r"input\.rows\.files: 1 -> 2"):
        run_dpo(config, str(tmp_path / "pairs"), str(base), str(tmp_path / "dpo"))


@pytest.mark.slow
def test_lora_dpo_uses_the_adapter_free_base_as_reference(checks, curated_pairs, tmp_path):
    """Under LoRA there is no second model: the reference is the policy with its adapters disabled,
    i.e. exactly the starting (SFT) model, while the adapters learn."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    from carevl.config import InputLimits
    from carevl.training.dpo import dpo_recipe
    from carevl.training.examples import load_examples, prepare_examples

    checks.write_dpo_rows(curated_pairs, tmp_path / "pairs")
    config = load_config(overrides=checks.MICRO + ["dpo.lora.r=4", "dpo.trainer.max_steps=2",
                                                   "dpo.trainer.per_device_train_batch_size=2",
                                                   "dpo.trainer.learning_rate=1e-2", "dpo.trainer.report_to=none"])
    recipe = dpo_recipe(config)
    prepare_examples(str(tmp_path / "pairs" / "dpo"), tmp_path / "data", recipe.build, recipe.features, InputLimits())
    base = checks.micro_folder()
    trainer, processor = run_module.build_trainer(recipe, config, str(base), load_examples(tmp_path / "data"),
                                                  tmp_path / "hf", "cpu")
    assert trainer.ref_model is None and isinstance(trainer.model, PeftModel)
    lora_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}
    trainer.train()
    assert any(not torch.equal(p, lora_before[n]) for n, p in trainer.model.named_parameters() if "lora_" in n)
    start = AutoModelForImageTextToText.from_pretrained(base).eval()
    batch = {"input_ids": torch.tensor([[1, 2, 3, 4, 5]]), "attention_mask": torch.ones(1, 5, dtype=torch.long)}
    trainer.model.eval()
    with torch.no_grad(), trainer.model.disable_adapter():
        reference = trainer.model(**batch).logits
    with torch.no_grad():
        policy = trainer.model(**batch).logits
    assert torch.allclose(reference, start(**batch).logits, atol=1e-5)   # the reference is the start model
    assert not torch.allclose(policy, reference)                          # the policy has moved away from it
