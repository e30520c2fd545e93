"""Clients of the judge service: the HTTP clients, and reward functions for RL trainers.

    from carevl.client import JudgeClient, AsyncJudgeClient, JudgeAPIError   # the HTTP API
    from carevl.client import JudgeReward              # TRL reward_funcs (GRPO, online DPO)
    from carevl.client import compute_score, compute_score_batch             # verl's custom reward

OpenRLHF needs no client code: its `--remote_rm_url` points at the service's /v1/openrlhf/get_reward.
"""
from carevl.client.http import AsyncJudgeClient, JudgeAPIError, JudgeClient, image_field, merge_rewards
from carevl.client.trl_rewards import JudgeReward
from carevl.client.verl_rewards import JudgeRewardError, compute_score, compute_score_batch

__all__ = ["AsyncJudgeClient", "JudgeAPIError", "JudgeClient", "JudgeReward", "JudgeRewardError", "compute_score",
           "compute_score_batch", "image_field", "merge_rewards"]
