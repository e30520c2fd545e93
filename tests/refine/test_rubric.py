"""Rubric prompt content and strict `Score: N` parsing (paper 3.5, Tables 4-5)."""
import pytest

from carevl.refine.rubric import (
    SCORE_AMBIGUOUS, SCORE_MALFORMED, SCORE_MISSING, SCORE_OK, SCORE_OUT_OF_RANGE, SCORE_REPLY_PREFIX,
    full_reply, parse_score, rubric_messages,
)


def test_prompt_shows_every_input_and_the_four_criteria():
    msgs = rubric_messages("How many cats?", "two cats on a sofa", "Two.", "Three.", "A",
                           "Verdict: A\nExplanation: the caption says two cats.")
    assert msgs[-1] == {"role": "assistant", "content": SCORE_REPLY_PREFIX}  # the reply is pre-filled
    text = msgs[-2]["content"]
    for part in ("How many cats?", "two cats on a sofa", "Answer A: Two.", "Answer B: Three.",
                 "Reference choice: Answer A", "the caption says two cats"):
        assert part in text
    for criterion in ("Relevance", "Factual accuracy", "Reasoning", "Clarity"):
        assert criterion in text
    assert text.count("(0-25)") == 4
    assert text.rstrip().endswith("Score: <total from 0 to 100>")


def test_prompt_rejects_bad_reference():
    with pytest.raises(ValueError):
        rubric_messages("q", "c", "a", "b", "C", "critique")


@pytest.mark.parametrize("text,expected", [
    ("Score: 85", 85),
    ("score: 0", 0),
    ("Score: 100", 100),
    ("**Score:** 72", 72),
    ("Score: 64/100", 64),
    ("Score: 64 / 100.", 64),
    ("The critique is clear.\nScore: 55\n", 55),
    ("Score: 40\nScore: 40", 40),
    ("  SCORE : 33", 33),
])
def test_valid_scores(text, expected):
    assert parse_score(text) == (expected, SCORE_OK)


@pytest.mark.parametrize("text,status", [
    (None, SCORE_MISSING),
    ("", SCORE_MISSING),
    ("   \n", SCORE_MISSING),
    ("I would give it 85.", SCORE_MISSING),          # a number without the label is never taken
    ("85", SCORE_MISSING),
    ("Score:", SCORE_MALFORMED),                      # partial: label without value
    ("Score: eighty", SCORE_MALFORMED),
    ("Score: 85.5", SCORE_MALFORMED),
    ("Score: 85 because it is clear", SCORE_MALFORMED),
    ("Score: 150", SCORE_OUT_OF_RANGE),
    ("Score: -5", SCORE_OUT_OF_RANGE),
    ("Score: 40\nScore: 90", SCORE_AMBIGUOUS),
])
def test_unparseable_scores_are_none_with_status(text, status):
    assert parse_score(text) == (None, status)


@pytest.mark.parametrize("continuation,expected", [
    (" 72", (72, SCORE_OK)), ("72\nbecause", (72, SCORE_OK)), (" 0.5", (None, SCORE_MALFORMED)),
    ("", (None, SCORE_MALFORMED)), (None, (None, SCORE_MISSING)),
])
def test_the_generated_continuation_is_read_after_the_prefill(continuation, expected):
    assert parse_score(full_reply(continuation)) == expected
