"""The judge service as a TRL reward function (`reward_funcs=`) for GRPO and online DPO.

    from carevl.client import JudgeReward
    reward = JudgeReward("http://127.0.0.1:8000", num_generations=4, method="bradley_terry")
    trainer = GRPOTrainer(model=..., reward_funcs=reward, args=GRPOConfig(num_generations=4, ...), ...)

TRL 1.16 calls a reward function as `f(prompts=, completions=, completion_ids=, **columns)`: one entry
per completion, every other dataset column repeated per completion, plus `trainer_state`, `log_extra`
and `log_metric` (GRPO). It takes back one float per completion, or None where there is none: TRL
turns None into NaN, which the group's mean and std leave out. Where the completions of one prompt sit:

- `GRPOTrainer` (layout "grpo"): a prompt's `num_generations` completions are consecutive;
- `trl.experimental.online_dpo.OnlineDPOTrainer` (layout "online_dpo"): the batch twice over,
  completions[i] and completions[i + B] answer prompt i; they are one group of 2.

Every group must hold one question: a block that mixes prompts (a `num_generations` other than the
trainer's, or a multi-process GRPO run whose per-process slice cuts a group, which within-group methods
cannot score) raises instead of scoring the wrong group. Method "reference" scores each completion on
its own, so any slicing suits it.

Each call sends the groups to `/v1/reward` in requests of at most `max_prompts_per_request` prompts
(up to `max_concurrent_requests` in flight when there are several) over one reused connection pool. Plain-text and
conversational prompts are both read: the question is the text of the last user message. The image
comes from `image_column`, or else the `image` / `images` column, or else the prompt's image parts; it
may be a PIL image, bytes, a file path, a datasets `{"bytes", "path"}` dict or a data URL (see
`image_field`). A text-only policy keeps its image in another column (e.g. "judge_image"), since TRL
hands an `image` column to the policy's processor. A completion the judge could not score gets None,
and the reason is logged (and counted in `log_metric("judge/failed_rewards")` when TRL offers it).
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Literal, Sequence

from carevl.client.http import JudgeClient, image_field

logger = logging.getLogger(__name__)

Layout = Literal["grpo", "online_dpo"]
CALL_KWARGS = frozenset({"completion_ids", "trainer_state", "log_extra", "log_metric", "environments"})


def message_text(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    raise TypeError(f"unsupported message content of type {type(content).__name__}")


def question_of(prompt: str | list[dict]) -> str:
    """The question a (plain or conversational) prompt asks: the prompt itself, or its last user message."""
    if isinstance(prompt, str):
        return prompt
    users = [m for m in prompt if m.get("role") == "user"]
    if not users:
        raise ValueError("a conversational prompt without a user message has no question for the judge")
    return message_text(users[-1]["content"])


def completion_text(completion: str | list[dict]) -> str:
    """A completion as text: itself, or its assistant messages' text joined."""
    if isinstance(completion, str):
        return completion
    return "\n".join(message_text(m["content"]) for m in completion if m.get("role", "assistant") == "assistant")


def prompt_image(prompt: str | list[dict]) -> Any:
    """The first image part of a conversational prompt (TRL keeps the image object in the part)."""
    if isinstance(prompt, str):
        return None
    for message in prompt:
        content = message.get("content")
        for part in content if isinstance(content, list) else []:
            if isinstance(part, dict) and part.get("type") == "image" and part.get("image") is not None:
                return part["image"]
    return None


def group_indices(n: int, layout: Layout, num_generations: int | None) -> list[list[int]]:
    """The completions of each prompt, in TRL's flat order, for the trainer's layout."""
    if layout == "online_dpo":
        if n % 2:
            raise ValueError(f"online DPO passes its batch twice, so an even number of completions; got {n}")
        return [[i, i + n // 2] for i in range(n // 2)]
    if not num_generations or n % num_generations:
        raise ValueError(f"{n} completions are not whole groups of num_generations={num_generations}; set "
                         "JudgeReward(num_generations=...) to the trainer's value")
    return [list(range(s, s + num_generations)) for s in range(0, n, num_generations)]


class JudgeReward:
    """A TRL reward function backed by the judge service's /v1/reward (see the module docstring)."""

    __name__ = "carevl_judge"  # the name TRL logs the reward under (`rewards/carevl_judge/mean`)

    def __init__(self, base_url: str, *, num_generations: int | None = None, layout: Layout = "grpo",
                 method: str | None = None, image_column: str | None = None, reference_column: str = "reference",
                 question_column: str | None = None, token: str | None = None, timeout_s: float = 300.0,
                 retries: int = 3, max_prompts_per_request: int = 32, max_concurrent_requests: int = 4,
                 transport=None) -> None:
        if layout == "grpo" and not num_generations:
            raise ValueError("layout 'grpo' needs num_generations (GRPOConfig.num_generations)")
        self.base_url, self.token, self.timeout_s, self.retries = base_url, token, timeout_s, retries
        self.num_generations, self.layout, self.method = num_generations, layout, method
        self.image_column, self.reference_column, self.question_column = image_column, reference_column, question_column
        self.max_prompts_per_request, self.max_concurrent_requests = max_prompts_per_request, max_concurrent_requests
        self.transport = transport  # an httpx transport (tests); None: the network
        self.stats = {"calls": 0, "requests": 0, "rewards": 0, "failed": 0}
        self._client: JudgeClient | None = None
        self._lock = threading.Lock()

    @classmethod
    def for_online_dpo(cls, base_url: str, **kwargs) -> "JudgeReward":
        """The callable for `OnlineDPOTrainer`: its two completions of a prompt compared with each other."""
        return cls(base_url, layout="online_dpo", **kwargs)

    # ---- TRL's entry point -------------------------------------------------------------------------
    def __call__(self, prompts: Sequence, completions: Sequence, **columns: Any) -> list[float | None]:
        groups = group_indices(len(completions), self.layout, self.num_generations)
        bodies = [self._prompt_body(members, prompts, completions, columns) for members in groups]
        result = self.client.reward_many(bodies, self.method, self.max_prompts_per_request,
                                         self.max_concurrent_requests)
        rewards: list[float | None] = [None] * len(completions)
        for members, group_rewards in zip(groups, result.rewards):
            for n, reward in zip(members, group_rewards):
                rewards[n] = reward
        failed = [(groups[f.prompt][f.completion], f.reason, f.message) for f in result.failures]
        self._count(-(-len(bodies) // self.max_prompts_per_request), len(completions), len(failed))
        if failed:
            logger.warning("judge gave no reward to %d of %d completions: %s", len(failed), len(completions),
                           "; ".join(f"completion {n}: {reason} ({message})" for n, reason, message in failed[:5]))
        if callable(columns.get("log_metric")):
            columns["log_metric"]("judge/failed_rewards", float(len(failed)))
        return rewards

    def _prompt_body(self, members: list[int], prompts: Sequence, completions: Sequence,
                     columns: dict[str, Any]) -> dict[str, Any]:
        """The /v1/reward prompt of one group; its completions must answer one question."""
        questions = [self._question(n, prompts, columns) for n in members]
        if len(set(questions)) > 1:
            raise ValueError(f"completions {members} form one group but answer different prompts: the trainer's "
                             f"layout or num_generations does not match JudgeReward(layout={self.layout!r}, "
                             f"num_generations={self.num_generations})")
        first = members[0]
        body = {"question": questions[0], "image": image_field(self._image(first, prompts, columns)),
                "completions": [completion_text(completions[n]) for n in members]}
        if self.reference_column in columns:
            body["reference"] = columns[self.reference_column][first]
        elif self.method == "reference":
            raise KeyError(f"method 'reference' reads the reference answer from the dataset column "
                           f"'{self.reference_column}', which this batch does not have (columns: {self._names(columns)})")
        return body

    def _question(self, n: int, prompts: Sequence, columns: dict[str, Any]) -> str:
        if self.question_column is None:
            return question_of(prompts[n])
        return str(self._column(self.question_column, columns)[n])

    def _image(self, n: int, prompts: Sequence, columns: dict[str, Any]) -> Any:
        if self.image_column is not None:
            value = self._column(self.image_column, columns)[n]
        elif "image" in columns:
            value = columns["image"][n]
        elif "images" in columns:
            value = columns["images"][n]
        else:
            return prompt_image(prompts[n])
        if isinstance(value, (list, tuple)):  # an `images` list: the judge looks at one image, the first
            return value[0] if value else None
        return value

    def _column(self, name: str, columns: dict[str, Any]) -> Sequence:
        if name not in columns:
            raise KeyError(f"dataset column '{name}' is not in the batch TRL passed (columns: {self._names(columns)})")
        return columns[name]

    @staticmethod
    def _names(columns: dict[str, Any]) -> list[str]:
        return sorted(k for k in columns if k not in CALL_KWARGS)

    # ---- HTTP --------------------------------------------------------------------------------------
    @property
    def client(self) -> JudgeClient:
        """One client (one connection pool) per reward function, opened on first use."""
        with self._lock:
            if self._client is None:
                self._client = JudgeClient(self.base_url, token=self.token, timeout_s=self.timeout_s,
                                           retries=self.retries, transport=self.transport)
            return self._client

    def _count(self, requests: int, rewards: int, failed: int) -> None:
        with self._lock:
            self.stats["calls"] += 1
            self.stats["requests"] += requests
            self.stats["rewards"] += rewards
            self.stats["failed"] += failed

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> "JudgeReward":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        """Picklable (TRL and Ray may ship reward functions to other processes): connections reopen there."""
        state = dict(self.__dict__)
        state.update(_client=None, _lock=None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
