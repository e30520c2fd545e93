"""The vllm backend on real vLLM engines (CPU build), against the transformers backend on the same models.

Text-only: vLLM's vision models need torchvision, which does not load beside the CPU torch.
"""
from __future__ import annotations

import gc

import numpy as np
import pytest

pytest.importorskip("vllm", reason="vLLM is not installed (make test-vllm runs these tests)")

from carevl.models.backends import make_scorer  # noqa: E402
from carevl.models.backends.transformers import RewardScorer, TextGenerator  # noqa: E402
from carevl.models.backends.vllm import VLLMRewardScorer, VLLMTextGenerator  # noqa: E402
from carevl.prompts import expert_messages  # noqa: E402
from carevl.refine.critiques import CritiqueScorer  # noqa: E402
from carevl.testing.vllm_kit import REWARD_ROLES, head_dim, reward_spec, text_lm_spec, tier_models  # noqa: E402

pytestmark = pytest.mark.vllm

QUESTIONS = ["What colour is the square?", "How many circles are there?", "Where is the red triangle?",
             "Describe the picture in one sentence.", "Is the blue shape above the green one?",
             "What shape is the largest?"]
ANSWERS = ["It is red.", "There are two circles, both blue.", "The triangle sits in the top left corner.",
           "A green square next to a small yellow circle on a white background.", "No.",
           "The largest shape is a purple rectangle that spans most of the image width." * 3]


def _shutdown(backend) -> None:
    """Free an engine's memory before the next one starts (several tiny engines share the machine)."""
    backend.llm.llm_engine.engine_core.shutdown()
    del backend.llm
    gc.collect()


@pytest.fixture(scope="module")
def kit():
    from carevl.config import load_config

    return tier_models(load_config().paths.model_cache_dir())


@pytest.fixture(scope="module")
def model_cache(kit):
    return kit["scorer"].parent


@pytest.mark.parametrize("role", REWARD_ROLES)
def test_reward_model_classify_returns_the_raw_reward_of_transformers(kit, model_cache, role):
    folder = kit[role]
    assert head_dim(folder) >= 32  # vLLM's CPU attention runs no smaller head
    reference = RewardScorer(reward_spec(folder, "transformers"), model_cache)
    texts = [reference.render(expert_messages(f"A caption of picture {i}.", q, a))
             for i, (q, a) in enumerate(zip(QUESTIONS, ANSWERS))]
    expected = reference.score(texts)
    scorer = make_scorer(reward_spec(folder, "vllm"), model_cache)
    assert isinstance(scorer, VLLMRewardScorer)
    try:
        got = scorer.score(texts)
    finally:
        _shutdown(scorer)
    assert scorer.forward_rows == len(texts)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    # Raw logits, not sigmoid probabilities: the order of distinct rewards survives, nothing is clipped to (0, 1).
    assert np.array_equal(np.argsort(got), np.argsort(expected))


@pytest.fixture(scope="module")
def scorer_stage(kit, model_cache):
    """Refinement's critique scorer on one vLLM engine of SmolLM2-135M-Instruct (automatic prefix
    caching on); its engine also serves the generation tests below."""
    # Statistics on: the prefix-cache test reads the engine's hit counter.
    spec = text_lm_spec(kit["scorer"], "vllm", prefix_cache=True, max_new_tokens=4, disable_log_stats=False)
    stage = CritiqueScorer(spec, str(model_cache))
    assert isinstance(stage.generator, VLLMTextGenerator)
    yield stage
    _shutdown(stage.generator)


@pytest.fixture(scope="module")
def reference_stage(kit, model_cache):
    """The same stage on transformers (with its hand-written prefix cache)."""
    stage = CritiqueScorer(text_lm_spec(kit["scorer"], "transformers", prefix_cache=True, max_new_tokens=4), str(model_cache))
    assert isinstance(stage.generator, TextGenerator)
    return stage


@pytest.fixture(scope="module")
def text_engine(scorer_stage):
    return scorer_stage.generator


@pytest.fixture(scope="module")
def text_reference(reference_stage):
    return reference_stage.generator


def _prompts() -> list[list[dict]]:
    """Caption- and candidate-style text-only prompts, as the caption and candidate stages send them."""
    return [[{"role": "user", "content": [{"type": "text", "text": q}]}] for q in QUESTIONS] + \
        [[{"role": "user", "content": "Describe a sunny beach in one short sentence."}]]


def test_greedy_generation_equals_transformers(text_engine, text_reference):
    prompts = _prompts()
    got = text_engine.generate(prompts, temperature=0.0, max_new_tokens=24)
    expected = text_reference.generate(prompts, temperature=0.0, max_new_tokens=24)
    assert got == expected
    assert all(len(texts) == 1 and texts[0] for texts in got)


def test_critique_sampling_draws_m_seeded_samples(text_engine):
    prompts = _prompts()[:3]
    first = text_engine.generate(prompts, temperature=1.0, max_new_tokens=16, num_samples=4, seed=7)
    again = text_engine.generate(prompts, temperature=1.0, max_new_tokens=16, num_samples=4, seed=7)
    other = text_engine.generate(prompts, temperature=1.0, max_new_tokens=16, num_samples=4, seed=8)
    assert [len(texts) for texts in first] == [4, 4, 4]
    assert first == again  # a redone unit repeats its critiques
    assert first != other
    assert any(len(set(texts)) > 1 for texts in first)  # m samples, not m copies of one


def test_next_token_scores_equal_transformers(text_engine, text_reference):
    prompts = _prompts()
    got = text_engine.score_next_token(prompts, [" A", " B"], "Verdict:")
    expected = text_reference.score_next_token(prompts, [" A", " B"], "Verdict:")
    renormalised = expected - np.logaddexp(expected[:, :1], expected[:, 1:])
    np.testing.assert_allclose(got, renormalised, atol=1e-4)


def _critique_rows(n: int) -> dict[str, list]:
    return {"pair_id": [f"p{i}" for i in range(n)], "question": QUESTIONS[:n],
            "caption": [f"A drawing with {i + 1} shapes." for i in range(n)], "response_a": ANSWERS[:n],
            "response_b": ANSWERS[1:n + 1], "label": ["A", "B"] * (n // 2) + ["A"] * (n % 2),
            "critiques": [[f"Verdict: A\nExplanation: answer A names {i} shapes.", "Verdict: B"] for i in range(n)],
            "correct": [[True, False]] * n, "skip_reason": [None] * n}


def test_critique_scorer_uses_vllm_prefix_caching(scorer_stage, reference_stage):
    rows = _critique_rows(4)
    hits_before = _prefix_cache_hits(scorer_stage.generator)
    got = scorer_stage(rows).to_pydict()
    expected = reference_stage(rows).to_pydict()
    assert got["score_replies"] == expected["score_replies"]
    assert got["score_status"] == expected["score_status"]
    assert sum(s is not None for scores in got["scores"] for s in scores) == \
        sum(s is not None for scores in expected["scores"] for s in scores)
    # Eight prompts share the long rubric: vLLM reused its cached blocks instead of recomputing them.
    assert _prefix_cache_hits(scorer_stage.generator) - hits_before > 0


def _prefix_cache_hits(generator) -> float:
    for metric in generator.llm.get_metrics():
        if metric.name == "vllm:prefix_cache_hits":
            return float(metric.value)
    raise AssertionError("the engine reports no prefix-cache metric")
