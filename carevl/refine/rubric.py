"""The critique-scoring rubric (paper 3.5, appendix Tables 4-5) and strict `Score: N` parsing.

A text-only scorer LLM grades one sampled critique at a time on four criteria of 25 points each:
relevance to the question and the image, factual accuracy, soundness of the reasoning, and clarity.
Because the scorer cannot see the image, the prompt carries the image's caption (paper 3.2). The
reference choice shown is the pair's relabelled target (paper 3.4), so the scorer can judge whether
the critique's reasoning supports the right answer.

The reply must contain a line `Score: N` with an integer N from 0 to 100. Anything else is recorded
as unscorable with a status; a score is never guessed from free text.
"""
from __future__ import annotations

import re

SCORER_SYSTEM = "You grade critiques that compare two answers about an image. You are strict and consistent."

RUBRIC_TEMPLATE = """\
A critique was written to decide which of two answers to a question about an image is better. Grade the \
critique (not the answers) from 0 to 100, adding up four criteria worth up to 25 points each.

1. Relevance (0-25): does the critique address this question and what the image shows, and does it \
back its final choice with points about these two answers rather than generic remarks? 0-5 barely \
related or no real choice; 6-10 weak links; 11-15 partly relevant, key points missed; 16-20 specific and \
mostly complete; 21-25 fully tied to the question, the image and both answers.
2. Factual accuracy (0-25): are the critique's claims about the image and about each answer true, and \
does it catch the factual errors the answers contain? 0-5 many false claims or errors missed; 6-10 \
several mistakes; 11-15 mostly right with minor slips; 16-20 accurate, only small details missed; \
21-25 fully accurate and thorough.
3. Reasoning (0-25): does the critique explain, step by step and without contradiction, why one answer \
beats the other? 0-5 arbitrary or contradictory; 6-10 shallow; 11-15 sound with gaps; 16-20 well \
argued; 21-25 rigorous, precise and balanced.
4. Clarity (0-25): is the critique well organised, concise and easy to follow? 0-5 confusing; 6-10 \
disjointed or repetitive; 11-15 readable with rough spots; 16-20 clear and well structured; \
21-25 polished and unambiguous.

Question: {question}

Image caption: {caption}

Answer A: {answer_a}

Answer B: {answer_b}

Reference choice: Answer {reference}

Critique to grade:
{critique}

Add up the four criteria and reply with one line in exactly this form: Score: <total from 0 to 100>"""

# The scorer's reply is pre-filled with this, so even a small scorer answers with a number right away
# (a worked example in the prompt made small scorers copy the example's number instead).
SCORE_REPLY_PREFIX = "Score:"

# Scoring statuses recorded next to every score.
SCORE_OK = "ok"
SCORE_MISSING = "missing"          # no `Score:` line at all (or an empty reply)
SCORE_MALFORMED = "malformed"      # a `Score:` line whose value is not an integer
SCORE_OUT_OF_RANGE = "out_of_range"
SCORE_AMBIGUOUS = "ambiguous"      # several `Score:` lines that disagree

_LABEL_RE = re.compile(r"^[\s*_#>]*score[\s*_]*:(?P<value>.*)$", re.IGNORECASE)
_VALUE_RE = re.compile(r"^[\s*_]*(?P<n>[+-]?\d+)(?:\s*/\s*100)?[\s*_.]*$")


def rubric_messages(question: str, caption: str | None, answer_a: str, answer_b: str,
                    reference: str, critique: str) -> list[dict]:
    """Chat messages asking the scorer to grade one critique (paper 3.5, Tables 4-5), ending with the
    pre-filled start of its reply (`SCORE_REPLY_PREFIX`); generation continues that message.

    `reference` is the pair's label, "A" or "B", in the same A/B order the critique saw.
    """
    if reference not in ("A", "B"):
        raise ValueError(f"reference must be 'A' or 'B', got {reference!r}")
    text = RUBRIC_TEMPLATE.format(
        question=question, caption=caption or "(no caption)", answer_a=answer_a, answer_b=answer_b,
        reference=reference, critique=critique.strip() or "(empty)",
    )
    return [{"role": "system", "content": SCORER_SYSTEM}, {"role": "user", "content": text},
            {"role": "assistant", "content": SCORE_REPLY_PREFIX}]


def full_reply(continuation: str | None) -> str | None:
    """The scorer's whole reply: the pre-filled prefix plus what it generated after it."""
    return None if continuation is None else f"{SCORE_REPLY_PREFIX} {continuation.strip()}"


def parse_score(text: str | None) -> tuple[int | None, str]:
    """Read `Score: N` (0 <= N <= 100) from a scorer reply: (score, status).

    Every line labelled `Score:` (case and light markdown tolerated, `N/100` accepted) is read.
    The score is returned only when at least one such line holds an integer and all integer lines
    agree; otherwise the score is None and the status says why (missing, malformed, out_of_range,
    ambiguous).
    """
    if not text or not text.strip():
        return None, SCORE_MISSING
    values: list[int] = []
    labelled = False
    for line in text.splitlines():
        label = _LABEL_RE.match(line)
        if not label:
            continue
        labelled = True
        value = _VALUE_RE.match(label.group("value"))
        if value:
            values.append(int(value.group("n")))
    if not values:
        return None, SCORE_MALFORMED if labelled else SCORE_MISSING
    if len(set(values)) > 1:
        return None, SCORE_AMBIGUOUS
    score = values[0]
    if not 0 <= score <= 100:
        return None, SCORE_OUT_OF_RANGE
    return score, SCORE_OK
