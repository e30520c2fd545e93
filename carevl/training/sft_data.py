"""High-confidence pairs -> judge conversations for SFT (paper 3.3).

Each pair becomes one prompt/completion example in TRL's vision format:

    {"prompt": judge_messages(question, first, second), "completion": [assistant: format_judgement(...)],
     "images": [PIL image]}

The order in which the two answers are shown is swapped for about half of the pairs, decided by a
hash of (seed, pair_id), so the judge cannot learn "A is usually right" and the choice is the same on
every worker and every re-run. With `sft.both_orders` every pair is shown in both orders instead (twice
the examples): a judge can then lower its loss only by reading the answers, never by favouring a
position, which is what its swap-consistency at inference needs. When the order is swapped, the target
verdict is swapped too and so are the explanation's mentions of "Answer A"/"Answer B", so the
explanation stays true to the order shown.
"""
from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any, Iterable

from carevl.judge_format import format_judgement, judge_messages, swap_answer_mentions, swap_choice

# Reasons a curated row yields no SFT example (counted in the SFT summary, never dropped silently).
NOT_HIGH = "not_high_confidence"
NO_LABEL = "no_label"
LABEL_MISMATCH = "label_differs_from_judge"
NO_EXPLANATION = "no_explanation"


def swap_order(seed: int, pair_id: str) -> bool:
    """Whether to show this pair's answers in swapped order: a fair coin fixed by (seed, pair_id)."""
    digest = hashlib.sha256(f"{seed}:{pair_id}".encode()).digest()
    return digest[0] & 1 == 1


def sft_target(row: dict[str, Any]) -> tuple[str | None, str | None]:
    """(choice, skip_reason) for one curated pair: the relabelled target of a high-confidence pair.

    For high-confidence pairs the curation job's `label` equals the strong judge's verdict (paper 3.2,
    3.4); a row where they differ, or without an explanation, is skipped with a reason.
    """
    if row.get("confidence") != "high":
        return None, NOT_HIGH
    label = row.get("label")
    if label not in ("A", "B"):
        return None, NO_LABEL
    if row.get("judge_choice") != label:
        return None, LABEL_MISMATCH
    if not (row.get("judge_explanation") or "").strip():
        return None, NO_EXPLANATION
    return label, None


def _example(row: dict[str, Any], choice: str, swapped: bool) -> dict[str, Any]:
    first, second = row["response_a"], row["response_b"]
    explanation = row["judge_explanation"]
    if swapped:
        first, second = second, first
        choice = swap_choice(choice)
        explanation = swap_answer_mentions(explanation)
    target = format_judgement(choice, explanation)  # type: ignore[arg-type]
    return {
        "pair_id": row["pair_id"],
        "swapped": swapped,
        "prompt": judge_messages(row["question"], first, second, with_image=True),
        "completion": [{"role": "assistant", "content": [{"type": "text", "text": target}]}],
    }


def sft_conversation(row: dict[str, Any], seed: int, both_orders: bool = False):
    """(example, skip_reason): the prompt/completion messages for one pair (image not attached yet),
    or, with `both_orders`, a list of two examples showing the pair in each order.

    Each example also carries `pair_id` and `swapped` so a run can be audited.
    """
    choice, reason = sft_target(row)
    if choice is None:
        return None, reason
    if both_orders:
        return [_example(row, choice, False), _example(row, choice, True)], None
    return _example(row, choice, swap_order(seed, row["pair_id"])), None


def sft_conversations(rows: Iterable[dict[str, Any]], seed: int,
                      both_orders: bool = False) -> tuple[list[dict[str, Any]], Counter]:
    """Examples for every usable row, plus skip counts by reason."""
    examples, skipped = [], Counter()
    for row in rows:
        example, reason = sft_conversation(row, seed, both_orders)
        if example is None:
            skipped[reason] += 1
        else:
            examples += example if isinstance(example, list) else [example]
    return examples, skipped
