"""The judge service's core: the request logic of /v1/judge and /v1/rank over a judge backend
(/v1/reward's is in `carevl.serving.rewards`).

Every caller's pair becomes a *group* of one or two ordered pairs ((A, B), plus (B, A) when a swap
check is asked for). `PairwiseJudging` turns groups into verdicts, swap checks and rankings; a backend
supplies `verdict_group` (p_a per ordered pair) and `explain_group` (a judgement text per ordered pair).

`JudgeEngine` (transformers): groups from concurrent callers are queued by `@serve.batch` and
flattened into one model call, so a swap check always sees both orders in the same forward pass, and
one caller's failure (a prompt too long for the model) never fails the others in its batch. Model
calls run on one worker thread: the event loop keeps accepting and parsing requests while the model
works, and the queue fills up for the next, larger batch. The vLLM backend
(`carevl.serving.vllm_engine`) needs no such queue: its engine batches continuously.
"""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from PIL import Image
from ray import serve

from carevl.config.stages import ServeConfig
from carevl.judge.model import JudgeModel
from carevl.judge.prompts import JudgePrompts
from carevl.judge.rules import (
    SwapOutcome,
    combine_swap,
    combine_swap_parsed,
    group_rewards,
    mean_win_probability,
    p_a_from_samples,
    rank_from_rewards,
    reward_comparisons,
    round_robin_pairs,
    winner_from_probability,
)
from carevl.judge_format import parse_explanation, parse_verdict
from carevl.metrics import record_judge_batch, record_p_a
from carevl.serving.schemas import JudgeRequest, JudgeResult, PairVerdict, RankRequest, RankResult


@dataclass(frozen=True)
class OrderedPair:
    """One pair in one presentation order, with the image already decoded."""

    question: str
    image: Image.Image | None
    response_a: str
    response_b: str

    def swapped(self) -> "OrderedPair":
        return OrderedPair(self.question, self.image, self.response_b, self.response_a)


def _group_size(groups: list[list[OrderedPair]]) -> int:
    """Batch size in pairs (a swap-checked request counts twice)."""
    return sum(len(g) for g in groups)


def _columns(pairs: list[OrderedPair]) -> dict[str, list]:
    return {"question": [p.question for p in pairs], "image": [p.image for p in pairs],
            "response_a": [p.response_a for p in pairs], "response_b": [p.response_b for p in pairs]}


class PairwiseJudging:
    """The request-level logic of /v1/judge and /v1/rank; a backend judges the ordered pairs.

    `model` answers the HTTP layer's checks (check_text, check_prompt_length, accepts_images, name,
    max_new_tokens) without running the judge.
    """

    model: JudgeModel | JudgePrompts
    settings: ServeConfig
    max_new_tokens: int  # explain mode

    async def verdict_group(self, group: list[OrderedPair]) -> list[float]:
        """p_a for each ordered pair of the group."""
        raise NotImplementedError

    async def explain_group(self, group: list[OrderedPair]) -> list[str]:
        """One judgement text (greedy) for each ordered pair of the group."""
        raise NotImplementedError

    async def check_health(self) -> None:
        """Raise when the backend cannot answer (Ray Serve's health probe)."""
        raise NotImplementedError

    @property
    def calibration_temperature(self) -> float:
        """The temperature the backend applies to every p_a it returns (1.0: uncalibrated)."""
        raise NotImplementedError

    async def verdict_pairs(self, pairs: list[OrderedPair]) -> list[float]:
        """p_a of many ordered pairs (one reward group): one `verdict_group` call when they fit
        `max_batch_size`, else near-equal chunks submitted together, which the dynamic batch packs into
        consecutive full batches."""
        if not pairs:
            return []
        size = self.settings.max_batch_size
        chunks = -(-len(pairs) // size)
        step = -(-len(pairs) // max(chunks, 1))
        parts = await asyncio.gather(*(self.verdict_group(pairs[s:s + step]) for s in range(0, len(pairs), step)))
        return [p for part in parts for p in part]

    async def judge(self, request: JudgeRequest, image: Image.Image | None) -> JudgeResult:
        """One /v1/judge item (also each item of /v1/judge/batch)."""
        start = time.perf_counter()
        mode = request.mode or self.settings.default_mode
        pair = OrderedPair(request.question, image, request.response_a, request.response_b)
        group = [pair, pair.swapped()] if request.swap_check else [pair]
        tie = self.settings.tie_on_swap_disagreement
        explanation = judgement = None
        if mode == "verdict":
            probs = await self.verdict_group(group)
            outcome: SwapOutcome | None = (combine_swap(probs[0], probs[1], tie) if request.swap_check
                                           else SwapOutcome(winner_from_probability(probs[0]), probs[0], True))
        else:
            texts = await self.explain_group(group)
            shares = [p_a_from_samples([parse_verdict(t)]) for t in texts]
            if request.swap_check:
                outcome = combine_swap_parsed(shares[0], shares[1], tie)
            else:
                outcome = None if shares[0] is None else SwapOutcome(winner_from_probability(shares[0]),
                                                                     shares[0], True)
            judgement, explanation = texts[0], parse_explanation(texts[0])
        record_p_a(outcome.p_a if outcome else None)
        return JudgeResult(
            winner=outcome.winner if outcome else None, p_a=outcome.p_a if outcome else None,
            explanation=explanation, judgement=judgement, mode=mode, model=self.settings.model,
            swap_consistent=(outcome.swap_consistent if outcome else False) if request.swap_check else None,
            latency_ms=(time.perf_counter() - start) * 1000.0,
        )

    async def rank(self, request: RankRequest, image: Image.Image | None) -> RankResult:
        """Best-of-N by a round robin of verdict-mode games (every pair, both orders with swap_check),
        ranked by the Copeland rule of the rewards (`group_rewards`, `rank_from_rewards`); all games
        go to the backend together."""
        start = time.perf_counter()
        k = len(request.candidates)
        comparisons = reward_comparisons(k, "copeland") if request.swap_check else round_robin_pairs(k)
        probs = await self.verdict_pairs([OrderedPair(request.question, image, request.candidates[i],
                                                      request.candidates[j]) for i, j in comparisons])
        tie = self.settings.tie_on_swap_disagreement
        shares = group_rewards(k, "copeland", comparisons, probs, tie_on_disagreement=tie)
        scores = mean_win_probability(k, comparisons, probs, tie)
        ranking = rank_from_rewards(shares, scores)
        games = []
        for n in range(0, len(comparisons), 2 if request.swap_check else 1):
            i, j = comparisons[n]
            if request.swap_check:  # comparisons n and n + 1 are (i, j) and (j, i)
                out = combine_swap(probs[n], probs[n + 1], tie)
                games.append(PairVerdict(a=i, b=j, winner=out.winner, p_a=out.p_a,
                                         swap_consistent=out.swap_consistent))
            else:
                games.append(PairVerdict(a=i, b=j, winner=winner_from_probability(probs[n]), p_a=probs[n]))
        return RankResult(ranking=ranking, best_index=ranking[0], scores=scores,
                          wins=[round(2 * share * (k - 1)) / 2 for share in shares], pairwise=games,
                          model=self.settings.model, latency_ms=(time.perf_counter() - start) * 1000.0)


class JudgeEngine(PairwiseJudging):
    """A `JudgeModel` (transformers) behind dynamic batching: verdict and explain calls across callers."""

    def __init__(self, judge: JudgeModel, settings: ServeConfig) -> None:
        self.model = judge
        self.settings = settings
        self.max_new_tokens = judge.max_new_tokens
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="judge-model")
        for handler in (self._verdict_batch, self._explain_batch):
            handler.set_max_batch_size(settings.max_batch_size)
            handler.set_batch_wait_timeout_s(settings.batch_wait_timeout_s)

    async def _run(self, fn, groups: list[list[OrderedPair]]) -> list:
        """Run `fn` on all pairs at once; if that fails, run each group alone so errors stay local."""
        loop = asyncio.get_running_loop()
        flat = [p for g in groups for p in g]
        record_judge_batch(len(flat))
        try:
            results = await loop.run_in_executor(self._executor, fn, _columns(flat))
        except Exception:  # noqa: BLE001 - isolated below; a real model fault fails every group again
            out: list = []
            for group in groups:
                try:
                    out.append(await loop.run_in_executor(self._executor, fn, _columns(group)))
                except Exception as exc:  # noqa: BLE001 - handed to that caller only
                    out.append(exc)
            return out
        out, start = [], 0
        for group in groups:
            out.append(results[start:start + len(group)])
            start += len(group)
        return out

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01, batch_size_fn=_group_size)
    async def _verdict_batch(self, groups: list[list[OrderedPair]]) -> list:
        return await self._run(lambda cols: list(self.model.verdict(cols)[0]), groups)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01, batch_size_fn=_group_size)
    async def _explain_batch(self, groups: list[list[OrderedPair]]) -> list:
        return await self._run(lambda cols: [texts[0] for texts in self.model.explain(cols)], groups)

    async def verdict_group(self, group: list[OrderedPair]) -> list[float]:
        """p_a for each ordered pair of the group, computed in one shared batch."""
        result = await self._verdict_batch(group)
        if isinstance(result, Exception):
            raise result
        return [float(p) for p in result]

    async def explain_group(self, group: list[OrderedPair]) -> list[str]:
        result = await self._explain_batch(group)
        if isinstance(result, Exception):
            raise result
        return result

    @property
    def calibration_temperature(self) -> float:
        return self.model.calibration.temperature

    async def check_health(self) -> None:
        if self.model.generator.model is None:
            raise RuntimeError("judge model is not loaded")
