"""The judge service on a vLLM engine (`serve.backend: vllm`): our pairwise ingress, vLLM's batching.

The replica hosts vLLM's async engine itself, next to the FastAPI ingress, rather than reaching
`ray.serve.llm`'s `LLMServer` through a deployment handle:

- verdict mode reads the log-probabilities of two given token ids at one position of a prompt we
  render ourselves (`JudgePrompts`, the same tokens the transformers backend reads); the engine API
  takes token prompts, `allowed_token_ids` and returns log-probabilities keyed by token id, where
  LLMServer's OpenAI-shaped API would hand back top-k token strings to match up again;
- one process holds ingress and engine: no second deployment, no extra hop per ordered pair, and the
  replica's `ray_actor_options` (one GPU) are the engine's resources;
- continuous batching is the engine's own: every ordered pair is one engine request, so the
  `@serve.batch` queue of the transformers backend is not needed (a swap check's two orders are two
  requests that run in whatever steps the scheduler packs them).

Explain mode generates greedily and returns the same JSON as the transformers backend; nothing streams.
Verdict p_a is calibrated with the model folder's calibration.json (`carevl.judge.calibration`), as
`JudgeModel` calibrates it on the transformers backend; explain-mode verdict shares are not rescaled.
"""
from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from carevl.config import ModelSpec
from carevl.config.stages import ServeConfig
from carevl.judge.calibration import load_calibration
from carevl.judge.model import VERDICT_CANDIDATES
from carevl.judge.prompts import JudgePrompts
from carevl.judge.rules import verdict_probability
from carevl.judge_format import VERDICT_PREFIX, judge_messages
from carevl.models.backends.vllm import (
    RUNNER_BY_TASK,
    ChatPrompts,
    candidate_log_probs,
    engine_kwargs,
    engine_source,
    import_vllm,
    next_token_kwargs,
    sampling_kwargs,
)
from carevl.serving.engine import OrderedPair, PairwiseJudging


class VLLMJudgeEngine(PairwiseJudging):
    """Verdicts and explanations of ordered pairs as requests to one vLLM `AsyncLLM`."""

    def __init__(self, spec: ModelSpec, model_cache: str | Path, settings: ServeConfig) -> None:
        if spec.resources.tensor_parallel_size > 1:
            raise ValueError("serve.backend 'vllm' runs the engine inside one replica: tensor_parallel_size "
                             f"must be 1, got {spec.resources.tensor_parallel_size}")
        vllm = import_vllm(spec)
        from vllm.sampling_params import RequestOutputKind

        source = engine_source(spec, Path(model_cache))
        self.settings = settings
        self.calibration = load_calibration(source)  # the transformers backend's JudgeModel does the same
        self.chat = ChatPrompts(spec, source)
        self.model = JudgePrompts(spec, self.chat.chat)
        self.max_new_tokens = settings.max_new_tokens or spec.generation.max_new_tokens
        args = vllm.AsyncEngineArgs(model=source, **engine_kwargs(spec), **RUNNER_BY_TASK["generate"])
        self.engine = vllm.AsyncLLMEngine.from_engine_args(args)
        self.verdict_ids = self.chat.candidate_token_ids(list(VERDICT_CANDIDATES), VERDICT_PREFIX)
        final = {"output_kind": RequestOutputKind.FINAL_ONLY}
        self.verdict_params = vllm.SamplingParams(**next_token_kwargs(self.verdict_ids), **final)
        self.explain_params = vllm.SamplingParams(**sampling_kwargs(spec, 0.0, self.max_new_tokens), **final)

    def _prompt(self, pair: OrderedPair, assistant_prefix: str) -> dict:
        messages = judge_messages(pair.question, pair.response_a, pair.response_b, pair.image is not None)
        return self.chat.prompt(messages, pair.image, assistant_prefix)

    async def _complete(self, prompt: dict, params):
        final = None
        async for output in self.engine.generate(prompt, params, request_id=uuid.uuid4().hex):
            final = output
        if final is None or not final.outputs:
            raise RuntimeError("the engine finished a request without output")
        return final.outputs[0]

    async def verdict_group(self, group: list[OrderedPair]) -> list[float]:
        outputs = await asyncio.gather(*(self._complete(self._prompt(p, VERDICT_PREFIX), self.verdict_params)
                                         for p in group))
        probs = []
        for output in outputs:
            log_a, log_b = candidate_log_probs(output.logprobs, self.verdict_ids)
            probs.append(verdict_probability(log_a, log_b))
        return self.calibration.apply_many(probs)

    @property
    def calibration_temperature(self) -> float:
        return self.calibration.temperature

    async def explain_group(self, group: list[OrderedPair]) -> list[str]:
        outputs = await asyncio.gather(*(self._complete(self._prompt(p, ""), self.explain_params) for p in group))
        return [output.text.strip() for output in outputs]

    async def check_health(self) -> None:
        await self.engine.check_health()

    def shutdown(self) -> None:
        self.engine.shutdown()
