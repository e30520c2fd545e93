"""From items to judge requests and back to one prediction record per item and run (paper A.2).

Pure functions over plain dicts:
  - `seeded_shuffle`: the item order every run uses (`--limit N` keeps the first N of it);
  - `presented_swapped`: whether an item is shown to the judge with its answers in swapped order,
    fixed by (seed, id) so it never depends on which other items are in the run;
  - `judge_requests`: one request per item, run and order (the second order only when the
    position check is on);
  - `build_record`: the judge's answers for one item and run -> the predictions.jsonl record.

Judge answers come back in the order the judge SAW the answers ("A" = shown first); records are in
the item's own order, so labels and verdicts compare directly.
"""
from __future__ import annotations

import hashlib
from typing import Any, Iterable

from carevl.evaluation.metrics import is_correct, tie_prediction
from carevl.judge_format import swap_choice

PRIMARY, SWAPPED = "primary", "swapped"
# The judge's per-request outcome.
STATUS_OK, STATUS_UNPARSEABLE, STATUS_ERROR, STATUS_NO_PREFERENCE = "ok", "unparseable", "error", "no_preference"


def _digest(*parts: object) -> int:
    blob = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "big")


def seeded_shuffle(items: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """Items in a pseudo-random order fixed by `seed` and each item's id (not by file order)."""
    return sorted(items, key=lambda it: (_digest("order", seed, it["id"]), it["id"]))


def presented_swapped(seed: int, item_id: str) -> bool:
    """True when the item's primary presentation shows its answers in swapped order (B first).

    The benchmark files list the better answer first almost always (VL-RewardBench: 1,245 of 1,250),
    so every item's A/B order is randomised before judging, with a fixed seed.
    """
    return _digest("swap", seed, item_id) % 2 == 1


def sample_seed(seed: int, item_id: str, run: int, order: str) -> int:
    """A sampling seed fixed by its parts: the in-process judge draws one per run, so k runs are k
    samples (paper A.2)."""
    return _digest("sample", seed, item_id, run, order) % (2**31 - 1)


def request_key(item_id: str, run: int, order: str) -> str:
    return f"{item_id}\x1f{run}\x1f{order}"


def judge_requests(
    items: Iterable[dict[str, Any]], runs: Iterable[int], seed: int, position_check: bool,
    done: set[tuple[str, int]] | frozenset = frozenset(),
) -> list[dict[str, Any]]:
    """Judge requests for every item and run not in `done`, each answer pair in the order shown.

    A request: {key, id, run, order, question, response_a, response_b, image_path, image_bytes}. The
    judge samples each run with its own seed (`sample_seed`), so k runs are k samples.
    """
    orders = (PRIMARY, SWAPPED) if position_check else (PRIMARY,)
    requests = []
    runs = list(runs)
    for item in items:
        swapped = presented_swapped(seed, item["id"])
        for run in runs:
            if (item["id"], run) in done:
                continue
            for order in orders:
                flip = swapped != (order == SWAPPED)
                first, second = ("response_b", "response_a") if flip else ("response_a", "response_b")
                requests.append({
                    "key": request_key(item["id"], run, order), "id": item["id"], "run": run, "order": order,
                    "question": item["question"], "response_a": item[first], "response_b": item[second],
                    "image_path": item.get("image_path"), "image_bytes": item.get("image_bytes"),
                })
    return requests


def _to_item_order(answer: dict[str, Any] | None, flip: bool) -> tuple[str | None, float | None]:
    """A judge answer (shown order) -> (verdict, p_a) in the item's own order."""
    if answer is None:
        return None, None
    verdict, p_a = answer.get("verdict"), answer.get("p_a")
    if flip:
        verdict = swap_choice(verdict)
        p_a = None if p_a is None else 1.0 - p_a
    return verdict, p_a


def build_record(
    item: dict[str, Any], run: int, seed: int, answers: dict[str, dict[str, Any]],
    allow_tie: bool, tie_margin: float,
) -> dict[str, Any]:
    """One predictions.jsonl record from the judge's answers for (item, run).

    `answers` maps order (primary / swapped) to {verdict, p_a, status, text}. The scored prediction is
    the primary order's verdict; with `allow_tie` (MLLM-as-a-Judge "Pair w. Tie") it is the three-way
    `tie_prediction`, which also uses the swapped order. Anything but a readable verdict is wrong.
    """
    swapped = presented_swapped(seed, item["id"])
    primary = answers[PRIMARY]
    second = answers.get(SWAPPED)
    verdict, p_a = _to_item_order(primary, swapped)
    verdict_swapped, p_a_swapped = _to_item_order(second, not swapped)
    three_way = tie_prediction(verdict, verdict_swapped, p_a, p_a_swapped, tie_margin)
    prediction = three_way if allow_tie else verdict
    return {
        "id": item["id"],
        "category": item["category"],
        "label": item["label"],
        "prediction": prediction,
        "correct": is_correct(prediction, item["label"]),
        "run": run,
        "status": primary.get("status", STATUS_OK),
        "status_swapped": None if second is None else second.get("status", STATUS_OK),
        "presented_swapped": swapped,
        "verdict": verdict,
        "verdict_swapped": verdict_swapped,
        "shown_verdicts": [a.get("verdict") for a in (primary, second) if a is not None],
        "p_a": p_a,
        "p_a_swapped": p_a_swapped,
        "tie_prediction": three_way,
        "len_a": len(item["response_a"]),
        "len_b": len(item["response_b"]),
        "judge_text": primary.get("text"),
    }
