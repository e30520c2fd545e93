"""The request logic of /v1/reward (and of the OpenRLHF route): groups of completions -> one reward each.

For a prompt with k completions, `reward_comparisons(k, method)` (carevl.judge.rules) names the ordered
pairs to judge (index k is the reference answer), `group_rewards` turns their calibrated p_a into one
reward per completion, so /v1/rank, /v1/reward and the offline scoring job share one rule. All
comparisons of one group go to the backend together (`PairwiseJudging.verdict_pairs`): one dynamic
batch when they fit `max_batch_size`, else consecutive full batches. The groups of a request are
judged concurrently, so the transformers backend packs several groups into one forward pass.

A completion that cannot be judged is not an error of the request: its comparisons are skipped
(p = None), and when none of its comparisons is left its reward is None, with the reason:

    reserved_token        the completion holds one of the judge's control tokens
    response_too_long     more characters than `limits.max_response_chars`
    prompt_too_long       every comparison it takes part in is over the judge's max_length
    judge_error           the backend failed on the group (the exception's text is the message)
    no_valid_comparison   every opponent of a within-group method failed for one of the reasons above
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from PIL import Image

from carevl.config.stages import ServeLimits
from carevl.judge.prompts import JudgePrompts, PromptTooLong, ReservedToken
from carevl.judge.rules import RewardMethod, group_rewards, reward_comparisons
from carevl.serving.engine import OrderedPair, PairwiseJudging

RESERVED_TOKEN = "reserved_token"
RESPONSE_TOO_LONG = "response_too_long"
PROMPT_TOO_LONG = "prompt_too_long"
JUDGE_ERROR = "judge_error"
NO_VALID_COMPARISON = "no_valid_comparison"
# A pair whose estimated length is this close to max_length is measured exactly (token merges at the
# joins make the sum of the parts differ from the whole by a token or two).
LENGTH_SLACK = 8


@dataclass
class RewardGroup:
    """One prompt's completions, checked and ready to judge. `texts` holds the completions followed by
    the reference (index k) when there is one; `failed` the completions refused before judging."""

    question: str
    image: Image.Image | None
    completions: list[str]
    reference: str | None
    failed: dict[int, tuple[str, str]] = field(default_factory=dict)    # completion -> (reason, message)
    too_long: set[tuple[int, int]] = field(default_factory=set)         # comparisons over max_length

    @property
    def texts(self) -> list[str]:
        return [*self.completions, *([self.reference] if self.reference is not None else [])]


@dataclass(frozen=True)
class GroupOutcome:
    rewards: list[float | None]
    failures: dict[int, tuple[str, str]]    # completion -> (reason, message), for every None reward
    comparisons: int                       # ordered pairs the backend judged


def screen_group(model: JudgePrompts, limits: ServeLimits, group: RewardGroup, method: RewardMethod) -> None:
    """Mark completions that cannot be judged (control tokens, over the character limit) and
    comparisons over the judge's max_length; fills `group.failed` and `group.too_long`. Tokenizes each
    text once and measures a pair exactly only near the limit."""
    for i, text in enumerate(group.completions):
        if len(text) > limits.max_response_chars:
            group.failed[i] = (RESPONSE_TOO_LONG, f"has {len(text)} characters, limit {limits.max_response_chars}")
            continue
        try:
            model.check_text(group.question, text, "")
        except ReservedToken as exc:
            group.failed[i] = (RESERVED_TOKEN, f"contains the judge's reserved token {exc.token!r}")
    texts, with_image = group.texts, group.image is not None
    base = model.prompt_length(group.question, "", "", with_image)
    extra = [model.prompt_length(group.question, t, "", with_image) - base for t in texts]
    max_length = model.spec.max_length
    for first, second in reward_comparisons(len(group.completions), method):
        if first in group.failed or second in group.failed:
            continue
        estimate = base + extra[first] + extra[second]
        if estimate > max_length + LENGTH_SLACK:
            group.too_long.add((first, second))
        elif estimate > max_length - LENGTH_SLACK:
            try:
                model.check_prompt_length(group.question, texts[first], texts[second], with_image)
            except PromptTooLong:
                group.too_long.add((first, second))


async def judge_group(engine: PairwiseJudging, group: RewardGroup, method: RewardMethod) -> GroupOutcome:
    """Judge every comparison of a screened group in one backend call and apply the reward rule."""
    k = len(group.completions)
    comparisons = reward_comparisons(k, method)
    texts = group.texts
    todo = [n for n, (a, b) in enumerate(comparisons)
            if a not in group.failed and b not in group.failed and (a, b) not in group.too_long]
    pairs = [OrderedPair(group.question, group.image, texts[comparisons[n][0]], texts[comparisons[n][1]])
             for n in todo]
    p_first: list[float | None] = [None] * len(comparisons)
    failures = dict(group.failed)
    if pairs:
        try:
            probs = await engine.verdict_pairs(pairs)
        except Exception as exc:  # noqa: BLE001 - reported per completion, never a silent 0
            message = f"{type(exc).__name__}: {exc}"
            return GroupOutcome([None] * k, {i: failures.get(i, (JUDGE_ERROR, message)) for i in range(k)}, 0)
        for n, p in zip(todo, probs):
            p_first[n] = p
    rewards = group_rewards(k, method, comparisons, p_first,
                            tie_on_disagreement=engine.settings.tie_on_swap_disagreement)
    for i, reward in enumerate(rewards):
        if reward is None and i not in failures:
            failures[i] = _reason_for(i, comparisons, group)
    return GroupOutcome(rewards, failures, len(pairs))


def _reason_for(i: int, comparisons: list[tuple[int, int]], group: RewardGroup) -> tuple[str, str]:
    if any(c in group.too_long for c in comparisons if i in c):
        return PROMPT_TOO_LONG, "its pairs are longer than the judge's max_length (or their opponents failed)"
    return NO_VALID_COMPARISON, "none of its comparisons could be judged (see the other completions' reasons)"


async def judge_groups(engine: PairwiseJudging, groups: list[RewardGroup], method: RewardMethod) -> list[GroupOutcome]:
    """All groups of one request, concurrently (the backend batches across them)."""
    return list(await asyncio.gather(*(judge_group(engine, g, method) for g in groups)))
