"""The demo's served answers are printed beside the truth of the synthetic image."""
from __future__ import annotations

from carevl.data.synth import eval_pair_truth, synth_eval_pairs
from carevl.demo import format_answers


def test_the_verdict_is_shown_beside_the_gold_label_and_what_the_image_shows():
    pair = {**next(iter(synth_eval_pairs(1, 7))), **eval_pair_truth(7, 0)}
    answers = {"pair": pair,
               "judge": {"winner": "A", "p_a": 0.81, "swap_consistent": False,
                         "explanation": "Answer A names a green square in the left half, as the image shows."},
               "rank": {"ranking": [0, 2, 1]}}
    text = format_answers(answers, width=70)
    flat = " ".join(text.split())
    gold = "a tie" if pair["label"] == "tie" else f"{pair['label']} is better"
    assert f"truth: {pair['image_shows']} Gold: {gold}." in flat
    assert "judge: A (p_a 0.81, the orders disagree); Answer A names a green square" in flat
    assert "best first [0, 2, 1]" in flat
    assert all(len(line) <= 70 for line in text.splitlines())


def test_the_truth_is_the_scene_the_pair_was_drawn_from():
    """A describe question's right answer is exactly what the image shows."""
    for index, pair in enumerate(synth_eval_pairs(40, 3)):
        truth = eval_pair_truth(3, index)
        if pair["question"].startswith("Describe") and pair["label"] != "tie":
            right = pair["response_a"] if pair["label"] == "A" else pair["response_b"]
            if truth["image_shows"] in right:
                return
    raise AssertionError("no describe pair whose better answer states the image's truth")
