"""The judge's single input/output format, shared by training (SFT targets, critiques), serving and
evaluation. Defined once here so every producer and parser agrees (paper 3.3, 3.7).

Output format (verdict first, so a verdict-only forward pass reads a position the judge was trained on):

    Verdict: A
    Explanation: <free text>

Answer labels are always "A" (the first answer shown) and "B" (the second).
"""
from __future__ import annotations

import re
from typing import Literal

Choice = Literal["A", "B"]
CHOICES: tuple[Choice, Choice] = ("A", "B")

SYSTEM_PROMPT = (
    "You are a careful judge of answers about images. Look at the image and the question, compare the "
    "two answers for correctness, faithfulness to the image and helpfulness, then state which is better."
)

USER_TEMPLATE = (
    "Question: {question}\n\n"
    "[Answer A]\n{response_a}\n[End of Answer A]\n\n"
    "[Answer B]\n{response_b}\n[End of Answer B]\n\n"
    "Reply with the line 'Verdict: A' or 'Verdict: B', then a line starting with 'Explanation:' "
    "that justifies the choice."
)

# The text the judge writes before the verdict token; verdict mode reads the next-token distribution here.
VERDICT_PREFIX = "Verdict:"

_MENTION_RE = re.compile(r"\b(answer|response|option|candidate)(\s+)([AB])\b", re.IGNORECASE)
_VERDICT_RE = re.compile(r"^\s*\**\s*verdict\s*\**\s*:\s*\**\s*\[?\s*(A|B)\s*\]?\**\s*$", re.IGNORECASE)
_EXPLANATION_RE = re.compile(r"^\s*explanation\s*:\s*", re.IGNORECASE)


def judge_messages(question: str, response_a: str, response_b: str, with_image: bool = True) -> list[dict]:
    """Chat messages (transformers multimodal format) asking the judge to compare two answers."""
    text = USER_TEMPLATE.format(question=question, response_a=response_a, response_b=response_b)
    content: list[dict] = [{"type": "image"}] if with_image else []
    content.append({"type": "text", "text": text})
    return [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
        {"role": "user", "content": content},
    ]


def format_judgement(choice: Choice, explanation: str) -> str:
    """The target text for SFT and the shape of every critique: verdict line, then explanation."""
    if choice not in CHOICES:
        raise ValueError(f"choice must be 'A' or 'B', got {choice!r}")
    explanation = " ".join(explanation.split()) or "No explanation given."
    return f"{VERDICT_PREFIX} {choice}\nExplanation: {explanation}"


def parse_verdict(text: str | None) -> Choice | None:
    """Strictly read the verdict: the first non-empty line must be `Verdict: A` or `Verdict: B`
    (case and light markdown tolerated). Anything else is unparseable and returns None; no guessing.
    """
    if not text:
        return None
    for line in text.splitlines():
        if line.strip():
            m = _VERDICT_RE.match(line)
            return m.group(1).upper() if m else None  # type: ignore[return-value]
    return None


def parse_explanation(text: str | None) -> str:
    """The explanation part of a judgement ('' when absent)."""
    if not text:
        return ""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if _EXPLANATION_RE.match(line):
            rest = [_EXPLANATION_RE.sub("", line, count=1)] + lines[i + 1:]
            return "\n".join(rest).strip()
    return ""


def swap_choice(choice: Choice | None) -> Choice | None:
    """The same verdict seen from the swapped order (A<->B)."""
    return None if choice is None else ("B" if choice == "A" else "A")


def swap_judgement(text: str) -> str:
    """The same judgement told for the swapped answer order: the verdict line names the other letter
    (so it still picks the same answer) and the explanation's answer mentions are exchanged. A text
    without a verdict line only has its mentions exchanged."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip():
            if _VERDICT_RE.match(line):
                lines[i] = f"{VERDICT_PREFIX} {swap_choice(parse_verdict(line))}"
                return "\n".join(lines[:i + 1] + [swap_answer_mentions(x) for x in lines[i + 1:]])
            break
    return swap_answer_mentions(text)


def swap_answer_mentions(text: str) -> str:
    """Exchange the letters in mentions such as "Answer A" / "response B" (A<->B), keeping the words.

    Used wherever a judgement is re-told for the swapped answer order, so its explanation keeps arguing
    for the answer its verdict names. Bare letters ("A is better") are left alone: they are too
    ambiguous to rewrite safely.
    """
    def flip(m: re.Match) -> str:
        letter = m.group(3)
        if not letter.isupper():  # "answer a question": an article, not a label
            return m.group(0)
        return f"{m.group(1)}{m.group(2)}{'B' if letter == 'A' else 'A'}"

    return _MENTION_RE.sub(flip, text)
