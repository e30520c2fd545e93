"""Batched chat generation and next-token scoring (VLMGenerator, TextGenerator)."""
from __future__ import annotations

import numpy as np
import pytest

from carevl import judge_format
from carevl.models.backends.transformers import MIN_SHARED_PREFIX, TextGenerator, VLMGenerator, shared_prefix_length


def _ask(text: str, with_image: bool) -> list[dict]:
    content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": text}]
    return [{"role": "user", "content": content}]


@pytest.fixture(scope="module")
def micro(model_cache, micro_vlm_spec):
    return VLMGenerator(micro_vlm_spec, model_cache)


@pytest.fixture(scope="module")
def vlm(model_cache, tiny_config):
    return VLMGenerator(tiny_config.models["vlm"], model_cache)


@pytest.fixture(scope="module")
def scorer(model_cache, tiny_config):
    return TextGenerator(tiny_config.models["scorer"], model_cache)


def test_generate_returns_num_samples_per_row_with_mixed_images(micro, shape_image):
    messages = [_ask("What is red?", True), _ask("Say hi.", False), _ask("Count the shapes.", True)]
    images = [shape_image, None, shape_image.rotate(90)]
    out = micro.generate(messages, images, temperature=1.0, max_new_tokens=6, num_samples=3, seed=0)
    assert len(out) == 3 and all(len(row) == 3 and all(isinstance(s, str) for s in row) for row in out)


def test_seeded_sampling_repeats_and_greedy_samples_agree(micro, shape_image):
    messages, images = [_ask("Describe.", True)], [shape_image]
    a = micro.generate(messages, images, temperature=1.0, max_new_tokens=8, num_samples=2, seed=7)
    b = micro.generate(messages, images, temperature=1.0, max_new_tokens=8, num_samples=2, seed=7)
    assert a == b
    greedy = micro.generate(messages, images, temperature=0.0, max_new_tokens=8, num_samples=2)
    assert greedy[0][0] == greedy[0][1]


def test_batched_generation_matches_row_by_row(micro, shape_image):
    messages = [_ask("A much longer question about the shapes in this picture?", True), _ask("Hi", False)]
    images = [shape_image, None]
    batched = micro.generate(messages, images, temperature=0.0, max_new_tokens=6)
    single = [micro.generate([m], [i], temperature=0.0, max_new_tokens=6)[0] for m, i in zip(messages, images)]
    assert batched == single


def test_image_and_message_mismatch_is_an_error(micro, shape_image):
    with pytest.raises(ValueError, match="row 0"):
        micro.generate([_ask("What?", True)], [None], temperature=0.0, max_new_tokens=2)
    with pytest.raises(ValueError, match="row 0"):
        micro.generate([_ask("What?", False)], [shape_image], temperature=0.0, max_new_tokens=2)
    with pytest.raises(ValueError, match="images"):
        micro.generate([_ask("What?", False)], [], temperature=0.0, max_new_tokens=2)


def test_prompt_longer_than_max_length_is_an_error(micro):
    with pytest.raises(ValueError, match="max_length"):
        micro.generate([_ask("word " * 600, False)], [None], temperature=0.0, max_new_tokens=2)


def test_score_next_token_gives_batch_consistent_log_probs(micro, shape_image):
    messages = [judge_format.judge_messages("What colour is the circle?", "Red.", "Blue, and there is a cat."),
                judge_format.judge_messages("Hi?", "Yes.", "No.", with_image=False)]
    images = [shape_image, None]
    scores = micro.score_next_token(messages, images, [" A", " B"], assistant_prefix=judge_format.VERDICT_PREFIX)
    assert scores.shape == (2, 2) and np.isfinite(scores).all() and (scores <= 0).all()
    assert not np.allclose(scores[:, 0], scores[:, 1])
    alone = micro.score_next_token(messages[1:], images[1:], [" A", " B"], judge_format.VERDICT_PREFIX)
    np.testing.assert_allclose(scores[1:], alone, atol=1e-4)  # left padding does not shift the read position


def test_candidates_must_start_with_distinct_tokens(vlm):
    with pytest.raises(ValueError, match="distinct"):
        vlm.score_next_token([_ask("Pick", False)], [None], [" A", " A"])


def test_real_vlm_generates_and_scores_a_judge_prompt(vlm, shape_image):
    out = vlm.generate([_ask("What do you see?", True)], [shape_image], temperature=0.0, max_new_tokens=8)
    assert any(ch.isalpha() for ch in out[0][0])
    messages = [judge_format.judge_messages("What colour is the circle?", "Red.", "Blue.")]
    scores = vlm.score_next_token(messages, [shape_image], [" A", " B"], judge_format.VERDICT_PREFIX)
    assert scores.shape == (1, 2) and np.isfinite(scores).all()


def test_text_generator_answers_and_scores(scorer):
    out = scorer.generate([[{"role": "user", "content": "What is the capital of France?"}]],
                          temperature=0.0, max_new_tokens=10, num_samples=2)
    assert "Paris" in out[0][0] and out[0][0] == out[0][1]
    scores = scorer.score_next_token([[{"role": "user", "content": "Rate this from 1 to 5."}]],
                                     ["1", "2", "3", "4", "5"], assistant_prefix="Score: ")
    assert scores.shape == (1, 5) and np.isfinite(scores).all()


def test_a_prefilled_reply_is_continued_not_reopened(scorer):
    ask = [{"role": "user", "content": "Rate Paris as a capital from 0 to 100."}]
    [prompt_new, prompt_cont] = scorer._prompts([ask, ask + [{"role": "assistant", "content": "Score:"}]], "")
    assert prompt_cont.endswith("Score:") and prompt_cont.startswith(prompt_new)
    [[reply]] = scorer.generate([ask + [{"role": "assistant", "content": "Score:"}]], temperature=0.0,
                                max_new_tokens=3)
    assert "Score" not in reply  # only the continuation comes back


@pytest.mark.parametrize("rows,expected", [
    ([[1, 2, 3, 4], [1, 2, 5]], 2), ([[1, 2, 3]], 2), ([[1, 2], [1, 2]], 1), ([[7], [7, 8]], 0),
    ([[1, 2], [3, 4]], 0), ([], 0),
])
def test_shared_prefix_leaves_every_row_a_token(rows, expected):
    assert shared_prefix_length(rows) == expected


def test_prefix_cache_reproduces_plain_greedy_generation(scorer, model_cache, tiny_config):
    spec = tiny_config.models["scorer"]
    spec = spec.model_copy(update={"generation": spec.generation.model_copy(update={"prefix_cache": True})})
    cached = TextGenerator(spec, model_cache)
    rules = "You grade short answers. " + " ".join(f"Rule {i}: be strict about point {i}." for i in range(12))
    asks = [[{"role": "system", "content": rules}, {"role": "user", "content": q},
             {"role": "assistant", "content": "Score:"}]
            for q in ("Grade: Paris is the capital of France.", "Grade: two plus two is five.",
                      "Grade: water boils at 100 C at sea level.")]
    expected = scorer.generate(asks, temperature=0.0, max_new_tokens=4)
    assert cached.generate(asks, temperature=0.0, max_new_tokens=4) == expected
    assert len(cached._cached_prefix) >= MIN_SHARED_PREFIX  # the rows did run on the shared cache
    assert cached.generate(asks[:1], temperature=0.0, max_new_tokens=4) == expected[:1]  # a one-row call
